#!/usr/bin/env node
// bertgate command line: classify, serve, worker, calibrate, evaluate, export, build, doctor, demo.

import { BertgateError, InvalidArgumentError } from '../errors.js';
import { buildCommand } from './build.js';
import { calibrateCommand } from './calibrate.js';
import { classifyCommand } from './classify.js';
import { demoCommand } from './demo.js';
import { doctorCommand } from './doctor.js';
import { evaluateCommand } from './evaluate.js';
import { exportCommand } from './export.js';
import { serveCommand } from './serve.js';

const USAGE = `Usage: bertgate <command> [options]

Commands:
  classify [--model DIR] [--threshold P] [texts...]
      Classify the texts given, or else each line of stdin (plain text, or JSONL with a
      "text" field; blank lines are skipped). Prints one JSON decision per line, in order.
      Without --model, the bundled default model is used.
      Options: --device cpu|cuda|cuda:N|cuda:*|cuda:0,cuda:1  --replicas N (per device)
               --dtype float32|float16|bfloat16  --temperature T  --other-label NAME  --top-k K
               --threads N (per replica)  --batch-size N
  serve [--model DIR] [--port P] [--host H] [--body-limit BYTES] [--max-texts N] [--request-timeout-ms MS]
        [--drain-timeout-ms MS]
      HTTP JSON API: POST /classify {"text"} or {"texts"}; GET /healthz, /readyz, /metrics, /stats.
      Takes classify's options (--device and --replicas place the model's replicas).
      Batching: --batch-size N --max-batch-tokens N --max-delay-ms MS --max-queue N
                --batches-in-flight N --fifo (no length-aware grouping). Stops gracefully on
                SIGTERM or SIGINT (a second one is ignored); a third signal, or the drain
                deadline (default 30 s), exits at once with status 1.
  worker --redis redis://HOST:PORT --queue NAME [--model DIR] [--concurrency N] [--metrics-port P] [--host H]
         [--lock-duration-ms MS] [--stalled-interval-ms MS] [--drain-timeout-ms MS]
      Classify the jobs of a BullMQ queue: a job's data is {"texts": [...], "options"?: {"timeoutMs"}},
      its result {"decisions": [...]}. --concurrency jobs at once (default 2) share one batcher.
      Bad input fails a job without retry; other failures are retried by the job's attempts.
      --metrics-port serves GET /healthz and /metrics. Takes serve's model and batching flags; stops
      like serve: SIGTERM or SIGINT finishes the active jobs, then exits 0.
  calibrate --model DIR --data FILE.jsonl [--target-accuracy 0.95 --delta 0.05 | --coverage 0.8] [--per-label] [--out DIR]
            [--gate-alpha A [--gate-dim 128] [--gate-data FILE.jsonl]]
      Fit the temperature, a confidence map and the threshold(s) from labelled {"text", "label"}
      lines (.jsonl or .jsonl.gz); writes calibration.json (with a drift reference),
      reliability.svg and risk-coverage.svg. --gate-alpha also fits an out-of-distribution gate
      (a model exported with --features) flagging at most A of in-distribution texts, on
      --gate-data or half of --data (at least the features' width plus the labels in texts; many
      more are better). Takes classify's --device, --dtype, --threads and batching flags.
  evaluate --model DIR --data FILE.jsonl [--ood FILE.jsonl]... [--json]
      Accuracy, macro-F1, NLL, ECE, AURC, coverage and selective accuracy at the model's
      thresholds, the gate's flagged share; with --ood ({"text"} lines, repeatable), AUROC/FPR95
      of each score, the gate's included, and the share sent to "Other".
      Takes every flag classify takes (--threshold, --temperature... evaluate those settings).
  export HF_MODEL_DIR BUNDLE_DIR [--max-length N] [--tolerance T] [--quantize int8] [--weights float16] [--features]
      [--feature-kind pooler|pooler+mean|mean:K]
      Make a bundle from a Hugging Face BertForSequenceClassification directory (save_pretrained
      output with a fast tokenizer), with the Python whose torch bertgate found (it needs
      transformers); checks the traced model against eager before writing it. --features adds
      the gate's features to the model's outputs: the pooled vector, with --feature-kind
      pooler+mean that vector beside the last layer's mean over the text's tokens, with mean:K
      the mean of hidden state K alone (0 the embeddings).
  build [--cuda auto|on|off]
      Compile the addon and an engine for the libtorch found (cmake, g++; nvcc for the CUDA
      kernels) into this package's build/Release, for a torch no shipped engine fits.
  doctor [--json] [--device D] [--replicas N] [--threads N]
      Report the addon, the libtorch lookup, the engine chosen for it (and why each other one
      does not fit), CUDA and threads, and where the replicas of those flags would run (with a
      note when they would take more threads than cores); exit 1 if anything is missing.
  demo
      Classify a few sample texts with the bundled default model.
`;

// node:util parseArgs throws TypeErrors (unknown flag, missing value, stray argument): they
// are the user's mistakes, so they become ERR_INVALID_ARGUMENT, not a stack trace.
async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_'))
      throw new InvalidArgumentError(`${(error as Error).message} (see "bertgate help")`);
    throw error;
  }
}

// Each command by name: the one list dispatch runs from and `COMMAND --help` is checked against.
const COMMANDS: Record<string, (rest: string[]) => number | Promise<number>> = {
  classify: classifyCommand,
  doctor: doctorCommand,
  serve: serveCommand,
  // Loaded on demand: bullmq and ioredis take longer to import than the rest of the CLI.
  worker: async (rest) => (await import('./worker.js')).workerCommand(rest),
  calibrate: calibrateCommand,
  evaluate: evaluateCommand,
  demo: demoCommand,
  export: exportCommand,
  build: buildCommand,
};

async function dispatch(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (run === undefined) {
    process.stderr.write(`bertgate: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  // `bertgate calibrate --help` is what a user types first; parseArgs would refuse the flag.
  // Only before a `--`: after it, "--help" is a text to classify.
  const dashes = rest.indexOf('--');
  const flags = dashes === -1 ? rest : rest.slice(0, dashes);
  if (flags.includes('--help') || flags.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const message =
      error instanceof BertgateError ? `${error.code}: ${error.message}` : String((error as Error)?.stack ?? error);
    process.stderr.write(`bertgate: ${message}\n`);
    process.exitCode = 1;
  },
);
