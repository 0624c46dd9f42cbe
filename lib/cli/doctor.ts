// bertgate doctor: what was found, in the order it was looked for.

import { parseArgs } from 'node:util';

import { doctor } from '../doctor.js';
import { formatSteps } from '../libtorch.js';

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true });
  const report = await doctor();
  if (values.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return report.ok ? 0 : 1;
  }
  const lines: string[] = [];
  const build = report.addon.build;
  lines.push(`addon            ${report.addon.path}${report.addon.source ? ` (${report.addon.source})` : ''}`);
  for (const c of report.addon.candidates)
    lines.push(`  [${c.source}] ${c.problem === undefined ? 'usable' : c.problem}`);
  if (build) {
    lines.push(
      `  built for      libtorch ${build.torchVersion}, cxx11 ABI ${build.cxx11Abi ? 'on' : 'off'}, ${build.buildSystem}, ${build.compiler}, N-API ${build.napiVersion}, CUDA kernels ${build.cudaKernels ? 'yes' : 'no'}`,
    );
  }
  lines.push('libtorch lookup');
  lines.push(report.libtorch.steps.length > 0 ? formatSteps(report.libtorch.steps) : '  (not reached)');
  if (report.libtorch.dir) {
    lines.push(
      `libtorch         ${report.libtorch.dir} (version ${report.libtorch.version}, via ${report.libtorch.source})`,
    );
  }
  if (report.cuda)
    lines.push(`CUDA libraries   ${report.cuda.loaded ? 'loaded' : 'not loaded'}: ${report.cuda.reason}`);
  if (report.runtime) {
    const r = report.runtime;
    lines.push(`engine           ${build?.engineLibrary ?? ''}`);
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
