export { Classifier } from './classifier.js';
export type { ClassifierInfo, ClassifierOptions, Device, DType, TextInput } from './classifier.js';
export type { Accepted, BelowThreshold, Decision, Invalid, Rejected, Scores, TopEntry } from './decision.js';
export {
  BertgateError,
  BundleError,
  ClosedError,
  DeviceUnavailableError,
  InferenceError,
  InvalidArgumentError,
  ModelLoadError,
  OutOfMemoryError,
  RuntimeLoadError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { doctor } from './doctor.js';
export type { DoctorReport } from './doctor.js';
