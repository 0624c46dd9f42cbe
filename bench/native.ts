// What the benchmarks share: the raw native engine beside the public API, and the event
// loop's worst delay while a competitor ran.

import { monitorEventLoopDelay } from 'node:perf_hooks';

export { fullRows, loadHandle, randomIds } from '../test/native-handle.js';

/** Starts watching; the returned function stops and gives the worst delay in ms. */
export function watchLoop(): () => number {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  return () => {
    histogram.disable();
    return histogram.max / 1e6;
  };
}
