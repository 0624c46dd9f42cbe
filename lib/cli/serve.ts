// bertgate serve: the HTTP API (lib/server.ts) until SIGTERM, SIGINT or SIGHUP (a closed terminal,
// and how dev environments pass a stop on), then a graceful stop: no new connections, in-flight
// requests answered, the model's queue drained. The drain survives a second signal (an impatient
// Ctrl-C, an orchestrator repeating itself); a third signal, or the drain deadline
// (--drain-timeout-ms), ends the process at once with exit 1.

import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { ListenError } from '../errors.js';
import { DEFAULTS, parseOptions } from '../options.js';
import { createServer } from '../server.js';
import { MODEL_FLAGS, classifierOptions, integer } from './options.js';

/**
 * Every flag checked, nothing loaded: a typo fails in milliseconds, not after the model load
 * (and the deploy test checks a manifest's arguments with it).
 */
export function parseServeArgs(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_FLAGS,
      port: { type: 'string' },
      host: { type: 'string' },
      'body-limit': { type: 'string' },
      'max-texts': { type: 'string' },
      'request-timeout-ms': { type: 'string' },
      'drain-timeout-ms': { type: 'string' },
    },
    strict: true,
  });
  const d = DEFAULTS.server;
  const port = integer('port', values.port, d.port, 0, 65535);
  const host = values.host ?? d.host;
  const server = {
    bodyLimit: integer('body-limit', values['body-limit'], d.bodyLimit, 1, 2 ** 31 - 1),
    maxTexts: integer('max-texts', values['max-texts'], d.maxTexts, 1, 1_000_000),
    requestTimeoutMs: integer('request-timeout-ms', values['request-timeout-ms'], d.requestTimeoutMs, 1, 3_600_000),
  };
  const drainTimeoutMs = integer('drain-timeout-ms', values['drain-timeout-ms'], d.drainTimeoutMs, 1, 3_600_000);
  const { bundle, options } = classifierOptions(values);
  parseOptions(options); // the model's options too, before the load
  return { port, host, server, drainTimeoutMs, bundle, options };
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { port, host, server, drainTimeoutMs, bundle, options } = parseServeArgs(argv);
  const classifier = await Classifier.load(bundle, options);
  const app = createServer(classifier, server);
  let address: string;
  try {
    address = await app.listen({ port, host });
  } catch (error) {
    await app.close().catch(() => {});
    await classifier.close();
    throw listenError(error as NodeJS.ErrnoException, host, port);
  }
  process.stdout.write(`listening on ${address}\n`);
  const warned = classifier.info.model.torchWarnings.length;
  // One line that points at them, not the messages: the engine keeps them out of the log.
  if (warned > 0) process.stdout.write(`libtorch warned ${warned} time(s) while loading; GET /stats lists them\n`);

  let signals = 0;
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) {
        process.stdout.write(`${signal}: finishing in-flight requests\n`);
        // The deadline must not hold the process open once the drain is done.
        setTimeout(
          () => forceExit(`the drain took longer than ${drainTimeoutMs} ms (--drain-timeout-ms)`),
          drainTimeoutMs,
        ).unref();
        resolve();
      } else if (signals === 2) {
        process.stdout.write(`${signal}: still finishing in-flight requests; a third signal exits at once\n`);
      } else {
        forceExit(`${signal} a third time`);
      }
    };
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, onSignal);
  });
  await app.close();
  await classifier.close();
  process.stdout.write('stopped\n');
  return 0;
}

/** Ends the process now: the requests still in flight get no answer. */
function forceExit(why: string): never {
  process.stderr.write(`bertgate: exiting before the drain finished: ${why}\n`);
  process.exit(1);
}

function listenError(error: NodeJS.ErrnoException, host: string, port: number): Error {
  const where = `${host}:${port}`;
  switch (error.code) {
    case 'EADDRINUSE':
      return new ListenError(`cannot listen on ${where}: the address is in use; choose another --port`);
    case 'EACCES':
      return new ListenError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges)`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ListenError(`cannot listen on ${where}: no such address on this machine (--host)`);
    default:
      return new ListenError(`cannot listen on ${where}: ${error.code ?? ''} ${error.message}`.trim());
  }
}
