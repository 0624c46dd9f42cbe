// bertgate demo (npm run demo): a few texts through the bundled default model.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { DEFAULT_BUNDLE } from './options.js';

export async function demoCommand(argv: string[]): Promise<number> {
  parseArgs({ args: argv, options: {}, strict: true });
  const texts = (await readFile(join(DEFAULT_BUNDLE, '..', 'demo-texts.txt'), 'utf8'))
    .split('\n')
    .filter((t) => t.trim());
  const classifier = await Classifier.load(DEFAULT_BUNDLE);
  try {
    const { info } = classifier;
    const out: string[] = [];
    out.push(`model   ${info.bundleDir} (${info.labels.length} labels, ${info.device}, ${info.threads} thread(s))`);
    if (info.randomWeights) {
      out.push('NOTE    this default model has RANDOM WEIGHTS: a stand-in made at set-up until a trained default');
      out.push('        model ships. Its labels and confidences are meaningless; the mechanics are real.');
    }
    out.push(
      `rule    accept the best label when p >= ${info.threshold} (temperature ${info.temperature}), else "${info.otherLabel}"`,
    );
    out.push('');
    const decisions = await classifier.classify(texts);
    decisions.forEach((d, i) => {
      const verdict = d.accepted
        ? `${d.label} (p=${d.probability.toFixed(3)})`
        : d.reason === 'invalid'
          ? `${d.label} (invalid logits)`
          : `${d.label} (best ${d.best}, p=${d.probability.toFixed(3)} < ${d.threshold})`;
      out.push(`${JSON.stringify(texts[i])}\n  -> ${verdict}${d.truncated ? ' [truncated]' : ''}`);
    });
    out.push('');
    out.push(JSON.stringify(decisions[0]));
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await classifier.close();
  }
  return 0;
}
