/**
 * Calling users' listeners (onBatch, onDrift). A listener that throws, or returns a promise that
 * rejects, must not stop a batch, wedge the batcher's slots or take the process down: its error
 * is reported as a process warning (`process.on('warning')`, printed to stderr by default) and
 * the next listener runs. The listeners called are those subscribed when the event happened: one
 * that subscribes another (or itself again) while being called does not extend this round.
 */
export function callListeners<E>(listeners: Iterable<(event: E) => void>, event: E, what: string): void {
  for (const listener of [...listeners]) {
    try {
      const result: unknown = listener(event);
      if (isThenable(result)) result.then(undefined, (error: unknown) => warn(error, what));
    } catch (error) {
      warn(error, what);
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  try {
    return (
      (typeof value === 'object' || typeof value === 'function') &&
      value !== null &&
      typeof (value as { then?: unknown }).then === 'function'
    );
  } catch {
    return false;
  }
}

function warn(error: unknown, what: string): void {
  process.emitWarning(`a bertgate ${what} listener threw; bertgate went on: ${describe(error)}`, {
    type: 'BertgateListenerWarning',
  });
}

/** What was thrown, in words, whatever it is: a value whose own toString or stack throws included. */
function describe(error: unknown): string {
  try {
    if (error instanceof Error) return String(error.stack ?? `${error.name}: ${error.message}`);
    return typeof error === 'symbol' ? error.toString() : String(error);
  } catch {
    try {
      return Object.prototype.toString.call(error);
    } catch {
      return 'a value that cannot be described';
    }
  }
}
