// The second process of bench/batching.ts: autocannon against `bertgate serve`, one text
// per request, cycling through real texts. Prints one JSON line.
//
//   node dist/bench/load-client.js URL CONNECTIONS SECONDS TEXTS.jsonl [full|short]

import { readFile } from 'node:fs/promises';

import autocannon from 'autocannon';

const [url, connections, seconds, file, field] = process.argv.slice(2) as [string, string, string, string, string?];
const bodies = (await readFile(file, 'utf8'))
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { text: string }).text)
  .map((text) => JSON.stringify({ text: field === 'short' ? text.split('\n')[0] : text }));
let next = 0;

const result = await autocannon({
  url: `${url}/classify`,
  connections: Number(connections),
  duration: Number(seconds),
  requests: [
    {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      setupRequest: (request) => ({ ...request, body: bodies[next++ % bodies.length] }),
    },
  ],
});
console.log(
  JSON.stringify({
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  }),
);
