import { availableParallelism } from 'node:os';

/** The intra-op threads a model gets unless told otherwise: all cores but one, so the event loop keeps a core. */
export const DEFAULT_THREADS = Math.max(1, availableParallelism() - 1);
