// Child process: addMsrDevice with a huge count used to die before its range check ran - a
// fatal V8 heap error at count 1e9, a stack overflow at 1e6 (building and spreading a list of
// every MSR). Prints the error's class and message, or "added".
import { KvmPartition } from '@hvemu/accel';

const [msr, count] = process.argv.slice(2).map(Number);
const p = KvmPartition.create({ memory: [{ gpa: 0, size: 1 << 20 }] });
try {
  p.addMsrDevice({ msr, count, read: () => 0n });
  console.log(JSON.stringify({ added: true }));
} catch (e) {
  console.log(JSON.stringify({ name: e.constructor.name, message: e.message }));
} finally {
  p.close();
}
