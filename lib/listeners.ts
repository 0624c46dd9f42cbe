/**
 * Calling users' listeners (onBatch, onDrift). A listener that throws must not stop a batch,
 * wedge the batcher's slots or take the process down: its error is reported as a process
 * warning (`process.on('warning')`, printed to stderr by default) and the next listener runs.
 */
export function callListeners<E>(listeners: Iterable<(event: E) => void>, event: E, what: string): void {
  for (const listener of listeners) {
    try {
      listener(event);
    } catch (error) {
      const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
      process.emitWarning(`a bertgate ${what} listener threw; bertgate went on: ${detail}`, {
        type: 'BertgateListenerWarning',
      });
    }
  }
}
