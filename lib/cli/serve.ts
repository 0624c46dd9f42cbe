// bertgate serve: the HTTP API (lib/server.ts) until SIGTERM or SIGINT, then a graceful stop:
// no new connections, in-flight requests answered, the model's queue drained.

import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
import { createServer } from '../server.js';
import { MODEL_FLAGS, classifierOptions } from './options.js';

function integer(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`Expected --${flag} to be a whole number, got ${JSON.stringify(value)}`);
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
    },
    strict: true,
  });
  const port = integer('port', values.port, 8080);
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);
  const app = createServer(classifier, {
    bodyLimit: integer('body-limit', values['body-limit'], 1024 * 1024),
    maxTexts: integer('max-texts', values['max-texts'], 1024),
  });
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
