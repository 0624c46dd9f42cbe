// bertgate serve: the HTTP API (lib/server.ts) until SIGTERM or SIGINT, then a graceful stop:
// no new connections, in-flight requests answered, the model's queue drained.

import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
import { createServer } from '../server.js';
import { MODEL_FLAGS, classifierOptions } from './options.js';

function integer(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(
      `Expected --${flag} to be a whole number in [${min}, ${max}], got ${JSON.stringify(value)}`,
    );
  return n;
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_FLAGS,
      port: { type: 'string' },
      host: { type: 'string' },
      'body-limit': { type: 'string' },
      'max-texts': { type: 'string' },
      'request-timeout-ms': { type: 'string' },
    },
    strict: true,
  });
  // Every flag is checked before the model loads: a typo fails in milliseconds, not after it.
  const port = integer('port', values.port, 8080, 0, 65535);
  const server = {
    bodyLimit: integer('body-limit', values['body-limit'], 1024 * 1024, 1, 2 ** 31 - 1),
    maxTexts: integer('max-texts', values['max-texts'], 1024, 1, 1_000_000),
    requestTimeoutMs: integer('request-timeout-ms', values['request-timeout-ms'], 30_000, 1, 3_600_000),
  };
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);
  const app = createServer(classifier, server);
  const address = await app.listen({ port, host: values.host ?? '127.0.0.1' });
  process.stdout.write(`listening on ${address}\n`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      process.stdout.write(`${signal}: finishing in-flight requests\n`);
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await app.close();
  await classifier.close();
  process.stdout.write('stopped\n');
  return 0;
}
