// Every engine of the prebuild matrix against its own torch: each loads the parity fixtures
// (.fixtures/labels2, labels7, labels50, exported with the project's torch) through the
// prebuilt addon, on the libtorch of that torch release (scripts/torch-wheels.mjs), and its
// logits must match transformers' eager logits within 1e-5. One child process per engine,
// since a process holds one libtorch. test/engine-matrix.test.ts runs it in npm test; run it
// alone to refresh the table in docs/install.md:  node scripts/engine-matrix.mjs --write-docs
// Each engine also loads the int8 fixtures, each against its own eager model within
// INT8_TOLERANCE: labels50-int8 (bertgate::linear_int8, the engine's own operator: no libtorch
// warning on any torch) and labels50-int8-legacy (torch.ao's quantized:: layers, as bundles
// exported before it hold; its reference and tolerance at this CPU's activation width,
// scripts/legacy-int8-reference.mjs). The child's stderr comes back, and the libtorch warnings each load
// collected instead of printing (the legacy bundle: quantized tensors' deprecation from torch
// 2.13 on); then the legacy one loads again with BERTGATE_TORCH_WARNINGS=stderr set in between,
// after a marker on stderr: the switch is read per load, and a second load lists the (warn-once)
// deprecation as well.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { ROOT, isMain } from './paths.mjs';
import { FLAVOURS } from './prebuilds.mjs';
import { MATRIX, libtorchDir } from './torch-wheels.mjs';

const exec = promisify(execFile);
export const TOLERANCE = 1e-5;
export const INT8_TOLERANCE = 1e-4;
const FIXTURES = ['labels2', 'labels7', 'labels50'];
const MARKER = '--- BERTGATE_TORCH_WARNINGS=stderr from here ---';

// Runs in the child: the chosen engine (doctor), the worst |logit - eager| over the float
// fixtures and over the int8 one, and the libtorch warnings the int8 load raised.
const CHILD = `
import { readFileSync } from 'node:fs';
import { Classifier, doctor } from ${JSON.stringify(join(ROOT, 'dist', 'lib', 'index.js'))};
import { legacyInt8Reference } from ${JSON.stringify(join(ROOT, 'scripts', 'legacy-int8-reference.mjs'))};
const report = await doctor();
if (!report.ok) throw new Error(report.problem);
let worst = 0, rows = 0;
for (const name of ${JSON.stringify(FIXTURES)}) {
  const dir = ${JSON.stringify(join(ROOT, '.fixtures'))} + '/' + name;
  const ref = JSON.parse(readFileSync(dir + '.expected.json', 'utf8'));
  const clf = await Classifier.load(dir, { maxBatchSize: 33 });
  const got = await clf.logits(ref.texts);
  got.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - ref.logits[i][j])); }));
  rows += got.length;
  await clf.close();
}
async function worstAgainstEager(dir, legacy) {
  const ref = JSON.parse(readFileSync(dir + '.expected.json', 'utf8'));
  const clf = await Classifier.load(dir);
  const eager = legacy ? legacyInt8Reference(ref, clf.info.model.int8ActivationBits) : { logits: ref.logits, tolerance: ${INT8_TOLERANCE} };
  let worst = 0;
  for (const [i, text] of ref.texts.entries()) {
    const row = await clf.logits(text);
    row.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - eager.logits[i][j])); });
  }
  const warnings = clf.info.model.torchWarnings;
  await clf.close();
  return [worst, warnings, eager.tolerance];
}
const int8Dir = ${JSON.stringify(join(ROOT, '.fixtures'))} + '/labels50-int8';
const [worstInt8, int8Warnings] = await worstAgainstEager(int8Dir, false);
const [worstLegacy, loadWarnings, legacyTolerance] = await worstAgainstEager(int8Dir + '-legacy', true);
process.stderr.write(${JSON.stringify(MARKER + '\n')});
process.env.BERTGATE_TORCH_WARNINGS = 'stderr';
const again = await Classifier.load(int8Dir + '-legacy');
const againWarnings = again.info.model.torchWarnings;
await again.close();
console.log(JSON.stringify({ engine: report.engines.chosen, torch: report.runtime.torchVersion, worst, rows, worstInt8, int8Warnings, worstLegacy, legacyTolerance, loadWarnings, againWarnings }));
`;

/** One engine on one torch: { version, flavour, engine, torch, worst, rows } or { ..., error }. */
export async function checkEngine(version, flavour) {
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LIBTORCH: libtorchDir(version),
    BERTGATE_ENGINE: flavour,
    BERTGATE_ADDON: join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`, 'bertgate.glibc.node'),
  };
  try {
    const { stdout, stderr } = await exec(process.execPath, ['--input-type=module', '-e', CHILD], { env, cwd: ROOT });
    const [quiet, asked = ''] = stderr.split(`${MARKER}\n`);
    return { version, flavour, ...JSON.parse(stdout.trim().split('\n').pop()), stderr: quiet, stderrAsked: asked };
  } catch (error) {
    return { version, flavour, error: (error.stderr || error.message).trim().split('\n').slice(-3).join(' ') };
  }
}

export async function checkMatrix(versions = MATRIX, flavours = FLAVOURS) {
  const results = [];
  for (const version of versions) for (const flavour of flavours) results.push(await checkEngine(version, flavour));
  return results;
}

const brief = (warning) => `"${warning.length > 90 ? `${warning.slice(0, 90)}…` : warning}"`.replace(/\|/g, '\\|');

export function table(results) {
  const lines = [
    '| torch | flavour | engine loaded | logits vs eager (max abs diff, 3 fixtures) | int8 fixture vs its eager model (bertgate::linear_int8; torch.ao legacy) | libtorch warnings collected at the int8 loads (none on stderr) |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    const outcome = r.error ? `failed: ${r.error}` : `${r.worst.toExponential(1)} over ${r.rows} texts`;
    const int8 = r.error ? '-' : `${r.worstInt8.toExponential(1)}; ${r.worstLegacy.toExponential(1)}`;
    const warnings = r.error ? [] : [...r.int8Warnings, ...r.loadWarnings];
    const warned = r.error ? '-' : warnings.length === 0 ? 'none' : `legacy: ${warnings.map(brief).join('; ')}`;
    lines.push(
      `| ${r.version} | ${r.flavour} | ${r.engine ?? '-'} on ${r.torch ?? '-'} | ${outcome} | ${int8} | ${warned} |`,
    );
  }
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const results = await checkMatrix();
  const text = table(results);
  console.log(text);
  if (process.argv.includes('--write-docs')) {
    const readme = join(ROOT, 'docs', 'install.md');
    const [start, end] = ['<!-- engine-matrix:start -->', '<!-- engine-matrix:end -->'];
    const current = readFileSync(readme, 'utf8');
    const at = current.indexOf(start);
    const stop = current.indexOf(end);
    if (at < 0 || stop < 0) throw new Error(`docs/install.md has no ${start} ... ${end} section`);
    const stamp = `Measured ${new Date().toISOString().slice(0, 10)} by \`node scripts/engine-matrix.mjs --write-docs\`:`;
    writeFileSync(readme, `${current.slice(0, at + start.length)}\n${stamp}\n\n${text}\n${current.slice(stop)}`);
  }
  const bad = (r) =>
    r.error ||
    !(r.worst <= TOLERANCE) ||
    !(r.worstInt8 <= INT8_TOLERANCE) ||
    !(r.worstLegacy <= r.legacyTolerance) ||
    r.int8Warnings.length > 0 ||
    r.stderr.trim() !== '';
  if (results.some(bad)) process.exitCode = 1;
}
