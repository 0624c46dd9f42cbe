// bertgate evaluate: how the model, as calibrated, does on labelled data (and on
// out-of-distribution texts, which should become "Other").

import { parseArgs } from 'node:util';

import { readLabelled } from '../calibration/data.js';
import { evaluate } from '../calibration/evaluate.js';
import { logitsOf } from '../calibration/logits.js';
import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
import { MODEL_FLAGS, classifierOptions } from './options.js';
import { progressBar } from './progress.js';

export async function evaluateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_FLAGS,
      data: { type: 'string' },
      ood: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  if (!values.data) throw new InvalidArgumentError('Expected --data FILE.jsonl (labelled {"text", "label"} lines)');
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);
  try {
    const data = await readLabelled(values.data, classifier.labels);
    const labelIndex = new Map(classifier.labels.map((l, i) => [l, i]));
    const logits = await logitsOf(
      classifier,
      data.examples.map((e) => e.text),
      progressBar('data'),
    );
    const ood = values.ood ? await readLabelled(values.ood) : undefined;
    const oodLogits = ood
      ? await logitsOf(
          classifier,
          ood.examples.map((e) => e.text),
          progressBar('ood'),
        )
      : undefined;
    const { info } = classifier;
    const thresholds = classifier.labels.map((l) => info.thresholds[l] ?? null);
    const result = evaluate(
      { logits, labels: data.examples.map((e) => labelIndex.get(e.label) as number) },
      info.temperature,
      (label) => thresholds[label] ?? null,
      classifier.labels.length,
      oodLogits,
      (probability) => classifier.confidenceOf(probability),
    );
    if (values.json) {
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      return 0;
    }
    const f = (v: number): string => v.toFixed(4);
    const lines = [
      `${result.n} examples from ${values.data}; temperature ${info.temperature}, threshold ${info.threshold}` +
        (Object.values(info.thresholds).some((t) => t !== info.threshold) ? ' (and per-label thresholds)' : ''),
      '',
      '| figure | value |',
      '| --- | --- |',
      `| accuracy | ${f(result.accuracy)} |`,
      `| macro-F1 | ${f(result.macroF1)} |`,
      `| NLL | ${f(result.nll)} |`,
      `| ECE of the confidence (15 bins; 95% bootstrap interval) | ${f(result.ece)} (${f(result.eceInterval[0])}–${f(result.eceInterval[1])}) |`,
      `| ECE of the max probability (15 bins) | ${f(result.eceProbability)} |`,
      `| AURC | ${f(result.aurc)} |`,
      `| coverage (not "${info.otherLabel}") | ${f(result.coverage)} |`,
      `| selective accuracy | ${f(result.selectiveAccuracy)} |`,
    ];
    if (result.ood) {
      lines.push(
        '',
        `${result.ood.n} out-of-distribution texts from ${values.ood}: ${(result.ood.toOther * 100).toFixed(1)}% sent to "${info.otherLabel}"`,
        '',
        '| score | AUROC (test vs OOD) | FPR at 95% TPR |',
        '| --- | --- | --- |',
        ...Object.entries(result.ood.scores).map(([name, s]) => `| ${name} | ${f(s.auroc)} | ${f(s.fpr95)} |`),
      );
    }
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  } finally {
    await classifier.close();
  }
}
