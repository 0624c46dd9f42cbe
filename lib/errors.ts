/**
 * Every failure bertgate reports is a BertgateError subclass with a stable `code`. Native
 * failures arrive as `{ message, code }` and are rebuilt here with the caller's stack, so a
 * user sees where *they* called, not an anonymous native frame.
 */

/** What a RuntimeLoadError says went wrong in finding or opening libtorch, the addon or the engine. */
export type RuntimeLoadCode =
  | 'ERR_LIBTORCH_NOT_FOUND'
  | 'ERR_LIBTORCH_VERSION'
  | 'ERR_LIBTORCH_LOAD'
  | 'ERR_LIBTORCH_CONFLICT'
  | 'ERR_ADDON_LOAD'
  | 'ERR_ENGINE_LOAD'
  | 'ERR_ENGINE_NOT_OPEN';

export type ErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_BUNDLE'
  | 'ERR_MODEL_LOAD'
  | 'ERR_MODEL_OUTPUT'
  | 'ERR_DEVICE_UNAVAILABLE'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_INFERENCE'
  | 'ERR_CLOSED'
  | 'ERR_NO_HEALTHY_REPLICA'
  | 'ERR_UNPROCESSABLE_TEXT'
  | 'ERR_OVERLOADED'
  | 'ERR_ABORTED'
  | 'ERR_TIMEOUT'
  | 'ERR_DATA'
  | 'ERR_EXPORT'
  | 'ERR_LISTEN'
  | 'ERR_DRIFT_STATE'
  | RuntimeLoadCode
  | 'ERR_INTERNAL';

export class BertgateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A value passed to bertgate has the wrong type or is out of range. */
export class InvalidArgumentError extends BertgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_INVALID_ARGUMENT', message, options);
  }
}

/** A bundle file is missing, unreadable, or disagrees with another part of the bundle. */
export class BundleError extends BertgateError {
  readonly file: string;
  readonly field: string | undefined;
  constructor(file: string, field: string | undefined, message: string, options?: ErrorOptions) {
    super('ERR_BUNDLE', message, options);
    this.file = file;
    this.field = field;
  }
}

/** model.pt could not be loaded, or its output is not classification logits. */
export class ModelLoadError extends BertgateError {
  constructor(code: 'ERR_MODEL_LOAD' | 'ERR_MODEL_OUTPUT', message: string) {
    super(code, message);
  }
}

/** The requested device does not exist in this process (no CUDA, no such index). */
export class DeviceUnavailableError extends BertgateError {
  constructor(message: string) {
    super('ERR_DEVICE_UNAVAILABLE', message);
  }
}

/** The device ran out of memory; a smaller batch may fit. */
export class OutOfMemoryError extends BertgateError {
  constructor(message: string) {
    super('ERR_OUT_OF_MEMORY', message);
  }
}

/** The forward pass failed, or a batch's output was not what the model gave at load (ERR_MODEL_OUTPUT). */
export class InferenceError extends BertgateError {
  constructor(code: 'ERR_INFERENCE' | 'ERR_INTERNAL' | 'ERR_MODEL_OUTPUT', message: string) {
    super(code, message);
  }
}

/** The classifier was used after close(). */
export class ClosedError extends BertgateError {
  constructor(message = 'the classifier is closed') {
    super('ERR_CLOSED', message);
  }
}

/**
 * Every replica of the classifier was taken out after engine faults (stats().replicas says
 * which and why): nothing is left to run a batch; a reload is the remedy (HTTP 503).
 */
export class NoHealthyReplicaError extends BertgateError {
  constructor(message: string) {
    super('ERR_NO_HEALTHY_REPLICA', message);
  }
}

/**
 * The model cannot run this text: its batch failed on a replica that then answered a one-text
 * probe, and splitting the batch isolated this text while its batch-mates were answered. The
 * same text fails again, so it is the caller's to change, not to retry (HTTP 422).
 */
export class UnprocessableTextError extends BertgateError {
  constructor(message: string) {
    super('ERR_UNPROCESSABLE_TEXT', message);
  }
}

/** The queue is full: the request was refused at once, before any work (HTTP 429). */
export class OverloadedError extends BertgateError {
  constructor(message: string) {
    super('ERR_OVERLOADED', message);
  }
}

/** The request's AbortSignal fired; its texts were dropped, or their results discarded. */
export class AbortedError extends BertgateError {
  constructor(reason?: unknown) {
    super('ERR_ABORTED', 'the request was aborted', reason === undefined ? undefined : { cause: reason });
  }
}

/** The request's timeoutMs passed before it finished; its texts were dropped. */
export class TimeoutError extends BertgateError {
  readonly timeoutMs: number;
  constructor(timeoutMs: number) {
    super('ERR_TIMEOUT', `the request did not finish within ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}

/** A labelled data file (calibrate, evaluate) is unreadable, malformed, or cannot support what was asked. */
export class DataError extends BertgateError {
  readonly file: string;
  readonly line: number | undefined;
  constructor(file: string, line: number | undefined, message: string) {
    super('ERR_DATA', message);
    this.file = file;
    this.line = line;
  }
}

/** `bertgate export` could not run the export tool, or the tool refused the model. */
export class ExportError extends BertgateError {
  constructor(message: string) {
    super('ERR_EXPORT', message);
  }
}

/** `bertgate serve` could not listen where it was told to (port in use, no permission, no such address). */
export class ListenError extends BertgateError {
  constructor(message: string) {
    super('ERR_LISTEN', message);
  }
}

/** A saved drift state does not fit this classifier's monitor: another calibration, another alpha, malformed. */
export class DriftStateError extends BertgateError {
  constructor(message: string) {
    super('ERR_DRIFT_STATE', message);
  }
}

/** libtorch or the native addon could not be found or loaded; the message says what was tried. */
export class RuntimeLoadError extends BertgateError {
  constructor(code: RuntimeLoadCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

/** The stack of whoever called into bertgate, captured before any await. */
export function callerStack(below: (...args: never[]) => unknown): string {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, below);
  return holder.stack ?? '';
}

/** Gives `error` the caller's stack frames in place of the ones it was created with. */
export function restack<E extends Error>(error: E, stack: string): E {
  const frames = stack.split('\n').slice(1).join('\n');
  // A copy for this caller: one error can fail many calls (every call with a text in a failed
  // batch), and each must get its own object, with its own stack, that no other caller touches.
  const copy = Object.create(Object.getPrototypeOf(error) as object) as E;
  for (const key of Reflect.ownKeys(error)) {
    Object.defineProperty(copy, key, Reflect.getOwnPropertyDescriptor(error, key) as PropertyDescriptor);
  }
  copy.stack = `${error.name}: ${error.message}\n${frames}`;
  return copy;
}

/**
 * Turns a native `{ message, code }` rejection into the typed error for its code. Every code
 * the native side raises has a case here (test/errors.test.ts reads them from native/):
 * ERR_INTERNAL is for a native failure nobody foresaw, never for a known one.
 */
export function fromNative(error: unknown, stack: string, during: 'load' | 'inference' = 'load'): BertgateError {
  if (error instanceof BertgateError) return restack(error, stack);
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  let typed: BertgateError;
  switch (code) {
    case 'ERR_MODEL_LOAD':
    case 'ERR_MODEL_OUTPUT':
      // The same check fails at load (the probe) or on a later batch: the class says when.
      typed =
        during === 'inference' && code === 'ERR_MODEL_OUTPUT'
          ? new InferenceError(code, message)
          : new ModelLoadError(code, message);
      break;
    case 'ERR_DEVICE_UNAVAILABLE':
      typed = new DeviceUnavailableError(message);
      break;
    case 'ERR_OUT_OF_MEMORY':
      typed = new OutOfMemoryError(message);
      break;
    case 'ERR_CLOSED':
      typed = new ClosedError(message);
      break;
    case 'ERR_LIBTORCH_LOAD':
    case 'ERR_LIBTORCH_CONFLICT':
    case 'ERR_ENGINE_LOAD':
    case 'ERR_ENGINE_NOT_OPEN':
      typed = new RuntimeLoadError(code, message);
      break;
    case 'ERR_INFERENCE':
      typed = new InferenceError('ERR_INFERENCE', message);
      break;
    case 'ERR_UNPROCESSABLE_TEXT':
      typed = new UnprocessableTextError(message);
      break;
    default:
      typed = new InferenceError('ERR_INTERNAL', message);
  }
  return restack(typed, stack);
}
