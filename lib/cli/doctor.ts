// bertgate doctor: what was found, in the order it was looked for.

import { parseArgs } from 'node:util';

import { doctor } from '../runtime/doctor.js';
import { formatSteps } from '../runtime/libtorch.js';

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true });
  const report = await doctor();
  if (values.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return report.ok ? 0 : 1;
  }
  const lines: string[] = [];
  const { addon } = report;
  lines.push(`addon            ${addon.path ?? '(none)'}${addon.source ? ` (${addon.source})` : ''}`);
  if (addon.problem) lines.push(`  ${addon.problem.replace(/\n/g, '\n  ')}`);
  if (addon.build) {
    const b = addon.build;
    lines.push(
      `  built with     ${b.buildSystem}, ${b.compiler}, N-API ${b.napiVersion}, cxx11 ABI ${b.cxx11Abi ? 'on' : 'off'}`,
    );
  }
  lines.push('libtorch lookup');
  lines.push(report.libtorch.steps.length > 0 ? formatSteps(report.libtorch.steps) : '  (not reached)');
  if (report.libtorch.dir) {
    lines.push(
      `libtorch         ${report.libtorch.dir} (version ${report.libtorch.version}, via ${report.libtorch.source})`,
    );
  }
  if (report.engines) {
    const e = report.engines;
    lines.push(`engines          ${e.manifest}`);
    for (const c of e.candidates) {
      const mark = c.file === e.chosen ? 'chosen' : c.problem === undefined ? 'fits' : c.problem;
      lines.push(`  ${c.file.padEnd(44)} ${mark}`);
    }
    lines.push(`engine           ${e.chosen ?? '(none fits)'}${e.chosen ? ` (${e.reason})` : ''}`);
  }
  if (report.cuda)
    lines.push(`CUDA libraries   ${report.cuda.loaded ? 'loaded' : 'not loaded'}: ${report.cuda.reason}`);
  if (report.runtime) {
    const r = report.runtime;
    const built = addon.build?.engine;
    lines.push(
      `  engine build   torch ${built?.torchVersion} headers, CUDA kernels ${built?.cudaKernels ? 'yes' : 'no'}`,
    );
    lines.push(`  torch          ${r.torchVersion} (cxx11 ABI ${r.cxx11Abi ? 'on' : 'off'})`);
    lines.push(`  CUDA           ${r.cudaAvailable ? `available, ${r.cudaDeviceCount} device(s)` : 'not available'}`);
    lines.push(
      `  threads        ${report.defaultThreads} intra-op per model by default (${report.cpus} CPUs); libtorch default ${r.intraOpThreads} intra-op, ${r.interopThreads} inter-op`,
    );
    lines.push(r.parallelInfo.trim().replace(/^/gm, '    '));
  }
  lines.push(report.ok ? 'ok' : `PROBLEM: ${report.problem}`);
  (report.ok ? process.stdout : process.stderr).write(lines.join('\n') + '\n');
  return report.ok ? 0 : 1;
}
