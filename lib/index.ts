export { Classifier } from './classifier.js';
export { DEFAULT_MODEL } from './bundle.js';
export type {
  BatchingOptions,
  CallOptions,
  ClassifierInfo,
  ClassifierOptions,
  ClassifierStats,
  Device,
  DType,
  Text,
  TextInput,
  TextPair,
} from './classifier.js';
export type { BatchEvent, BatcherStats } from './batcher.js';
export type { TruncationSide, TruncationStrategy } from './tokenizer.js';
export type { Accepted, BelowThreshold, Decision, Invalid, Rejected, Scores, TopEntry } from './decision.js';
export {
  AbortedError,
  BertgateError,
  BundleError,
  ClosedError,
  DeviceUnavailableError,
  ExportError,
  InferenceError,
  InvalidArgumentError,
  ModelLoadError,
  OutOfMemoryError,
  OverloadedError,
  RuntimeLoadError,
  TimeoutError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { doctor } from './doctor.js';
export type { DoctorReport } from './doctor.js';
