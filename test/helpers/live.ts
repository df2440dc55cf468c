import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { liveTensors } from '../../lib';

let gc: (() => void) | undefined;

/**
 * The number of live CPU tensors once the garbage collector has freed every unreachable one. Test
 * files share a worker, so tensors another file dropped may still be waiting for the collector; a
 * leak check that compares counts must settle them first or a collection in between moves the count.
 */
export async function settledCpuTensors(): Promise<number> {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  let last = -1;
  for (let i = 0; i < 10; i++) {
    gc!();
    // Node-API finalizers may run after the collection, from the event loop.
    await new Promise((r) => setImmediate(r));
    const n = liveTensors().cpu.count;
    if (n === last) return n;
    last = n;
  }
  return last;
}
