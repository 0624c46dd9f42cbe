// bertgate evaluate: how the model, as calibrated, does on labelled data (and on
// out-of-distribution texts, which should become "Other").

import { parseArgs } from 'node:util';

import { readLabelled, readTexts } from '../calibration/data.js';
import { evaluate, type OodSet } from '../calibration/evaluate.js';
import { logitsOf, servedScores } from '../calibration/logits.js';
import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
import { MODEL_FLAGS, classifierOptions } from './options.js';
import { progressBar } from './progress.js';

/** The gate's score of each text, as the classifier serves it. */
async function gateScores(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  name: string,
): Promise<number[]> {
  return Array.from((await servedScores(classifier, texts, progressBar(name))).ood);
}

export async function evaluateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_FLAGS,
      data: { type: 'string' },
      ood: { type: 'string', multiple: true },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  if (!values.data) throw new InvalidArgumentError('Expected --data FILE.jsonl (labelled {"text", "label"} lines)');
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, { ...options, drift: false });
  try {
    // Every file is read, and each text checked as the classifier would, before the first pass:
    // a bad line fails in seconds, not after it, and is named by its line, not its place in a chunk.
    const limits = { maxTextLength: classifier.info.maxTextLength };
    const data = await readLabelled(values.data, classifier.labels, limits);
    const oodFiles = await Promise.all(
      (values.ood ?? []).map(async (file) => ({ file, texts: await readTexts(file, limits) })),
    );
    const labelIndex = new Map(classifier.labels.map((l, i) => [l, i]));
    const texts = data.examples.map((e) => e.text);
    const logits = await logitsOf(classifier, texts, progressBar('data'));
    const { info } = classifier;
    const gate = info.gate
      ? { scores: await gateScores(classifier, texts, 'gate'), threshold: info.gate.threshold, alpha: info.gate.alpha }
      : undefined;
    const oodSets: OodSet[] = [];
    for (const { file, texts: oodTexts } of oodFiles) {
      oodSets.push({
        name: file,
        logits: await logitsOf(classifier, oodTexts, progressBar('ood')),
        ...(gate ? { gate: await gateScores(classifier, oodTexts, 'ood gate') } : {}),
      });
    }
    const thresholds = classifier.labels.map((l) => info.thresholds[l] ?? null);
    const result = evaluate(
      { logits, labels: data.examples.map((e) => labelIndex.get(e.label) as number) },
      info.temperature,
      (label) => thresholds[label] ?? null,
      classifier.labels.length,
      oodSets,
      (probability) => classifier.confidenceOf(probability),
      gate,
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
      // Nothing accepted leaves no accuracy to measure (NaN in the result, null in --json).
      `| selective accuracy | ${result.coverage === 0 ? 'n/a (no text accepted)' : f(result.selectiveAccuracy)} |`,
      ...(result.gate
        ? [
            `| flagged by the gate (promised <= ${result.gate.alpha}; one binomial standard error ` +
              `${f(Math.sqrt((result.gate.alpha * (1 - result.gate.alpha)) / result.gate.n))}) | ${f(result.gate.flagged)} |`,
          ]
        : []),
    ];
    for (const set of result.ood ?? []) {
      lines.push(
        '',
        `${set.n} out-of-distribution texts from ${set.name}: ${(set.toOther * 100).toFixed(1)}% sent to "${info.otherLabel}"` +
          (set.flagged === undefined ? '' : `, ${(set.flagged * 100).toFixed(1)}% flagged by the gate`),
        '',
        '| score | AUROC (data vs these) | FPR at 95% TPR |',
        '| --- | --- | --- |',
        ...Object.entries(set.scores).map(([name, s]) => `| ${name} | ${f(s.auroc)} | ${f(s.fpr95)} |`),
      );
    }
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  } finally {
    await classifier.close();
  }
}
