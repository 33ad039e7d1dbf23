/** @hvemu/synic/testing: the message-slot reference model, its fast-check commands, and hvemu's SynIC as a system under test. */
export { SynicSlotModel, synicSlotCommands, synicSlotProperty, type SlotContent, type SynicSystem } from './model.js';
export { hvemuSynicSystem, TEST_SIMP_GPA, TEST_VECTOR_BASE } from './system.js';
