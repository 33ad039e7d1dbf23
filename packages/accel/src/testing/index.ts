/**
 * @hvemu/accel/testing: the fake hypervisor layers the MSHV and WHPX backends are tested on
 * (there is no /dev/mshv or WinHvPlatform.dll on development machines). Each records every
 * call and answers runs from a script; hand one to `MshvPartition.create(opts, sys)` or
 * `WhpxPartition.create(opts, api)`. Not part of the main export: production code never
 * needs them.
 */
export { FakeMshvSys, type FakeCall, type RunStep, type HvcallAnswer } from './fake-mshv-sys.js';
export {
  FakeWhpxApi,
  blankExitContext as whpxBlankExitContext,
  type FakeCall as WhpxFakeCall,
  type ScriptedExit as WhpxScriptedExit,
  type FakeWhpxOptions,
} from './fake-whpx-api.js';
export { mshvMessage, mshvExits, whpxX64Exit, whpxExits, whpxCapabilities, type InterceptSpec } from './scripted-exits.js';
