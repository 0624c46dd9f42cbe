export { Classifier } from './classifier.js';
export { DEFAULT_MODEL } from './bundle.js';
export type { ClassifierInfo, ClassifierStats } from './classifier.js';
export type { BatchingOptions, CallOptions, ClassifierOptions, Device, DType } from './options.js';
export { DEFAULTS } from './options.js';
export type { Text, TextInput, TextPair } from './inputs.js';
export type { BatchEvent, BatcherStats } from './batcher.js';
export type { ReplicaStats } from './replicas.js';
export type { NativeCpuCache as CpuCacheStats } from './binding.js';
export type { TruncationSide, TruncationStrategy } from './tokenizer.js';
export type {
  Accepted,
  BelowThreshold,
  Decision,
  Invalid,
  OutOfDistribution,
  Rejected,
  Scores,
  TopEntry,
} from './decision.js';
export {
  AbortedError,
  BertgateError,
  BundleError,
  ClosedError,
  DeviceUnavailableError,
  DriftStateError,
  ExportError,
  ListenError,
  InferenceError,
  InvalidArgumentError,
  ModelLoadError,
  NoHealthyReplicaError,
  OutOfMemoryError,
  OverloadedError,
  RuntimeLoadError,
  TimeoutError,
  UnprocessableTextError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export type { DriftState, DriftStats } from './drift.js';
export { doctor } from './runtime/doctor.js';
export type { DoctorReport } from './runtime/doctor.js';
