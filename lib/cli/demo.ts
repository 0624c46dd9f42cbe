// bertgate demo (npm run demo): a few texts through the bundled default model.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import type { Decision } from '../decision.js';
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
      out.push('NOTE    this model has RANDOM WEIGHTS (its bundle.json says so): its labels and confidences are');
      out.push('        meaningless; the mechanics are real.');
    }
    const score = info.confidenceMap ? 'its calibrated confidence' : 'p';
    out.push(
      `rule    accept the best label when ${score} >= ${round(info.threshold)} (temperature ${round(info.temperature)}), else "${info.otherLabel}"`,
    );
    if (info.gate) {
      out.push(
        `        and only texts the out-of-distribution gate passes (score <= ${round(info.gate.threshold)}: ` +
          `at most ${info.gate.alpha} of in-distribution texts flagged)`,
      );
    }
    const why = describeGuarantee(info.guarantee);
    if (why) out.push(`        ${why}`);
    out.push('');
    const decisions = await classifier.classify(texts);
    decisions.forEach((d, i) => {
      const verdict = d.accepted
        ? `${d.label} (confidence ${d.confidence.toFixed(3)})`
        : d.reason === 'invalid'
          ? `${d.label} (invalid logits)`
          : d.reason === 'out-of-distribution'
            ? `${d.label} (best ${d.best}, out of distribution: gate score ${round(d.scores?.ood ?? Number.NaN)} > ${round(d.threshold)})`
            : d.threshold === null
              ? `${d.label} (best ${d.best}, a label never accepted)`
              : `${d.label} (best ${d.best}, confidence ${d.confidence.toFixed(3)} < ${round(d.threshold)})`;
      out.push(`${JSON.stringify(texts[i])}\n  -> ${verdict}${d.truncated ? ' [truncated]' : ''}`);
    });
    out.push('');
    out.push(otherSummary(decisions, info.otherLabel));
    out.push('');
    out.push(JSON.stringify(decisions[0]));
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await classifier.close();
  }
  return 0;
}

// How many texts the rule sent to "Other", by reason: what a reader of the demo asks first.
function otherSummary(decisions: readonly Decision[], other: string): string {
  const why = new Map<string, number>();
  for (const d of decisions) {
    if (d.accepted) continue;
    const reason =
      d.reason === 'out-of-distribution'
        ? 'out of distribution (the gate)'
        : d.reason === 'invalid'
          ? 'invalid logits'
          : d.threshold === null
            ? 'a label never accepted'
            : 'confidence below the threshold';
    why.set(reason, (why.get(reason) ?? 0) + 1);
  }
  const total = [...why.values()].reduce((a, b) => a + b, 0);
  const parts = [...why].map(([reason, n]) => `${n} ${reason}`);
  return `${total} of ${decisions.length} texts went to "${other}"${parts.length ? `: ${parts.join(', ')}` : ''}`;
}

// Four significant digits: the printed rule is for people; the exact value is in calibration.json.
function round(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(4))) : String(x);
}

// One sentence for the selective-risk guarantee `bertgate calibrate` records; nothing for other kinds.
function describeGuarantee(g: Readonly<Record<string, unknown>> | undefined): string | undefined {
  if (!g || g['kind'] !== 'selective-risk') return undefined;
  const { n, target_accuracy: acc, delta } = g;
  if (typeof n !== 'number' || typeof acc !== 'number' || typeof delta !== 'number') return undefined;
  return `calibrated on ${n} labelled texts: accuracy on accepted texts >= ${acc} with probability >= ${round(1 - delta)}`;
}
