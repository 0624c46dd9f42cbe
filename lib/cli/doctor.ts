// bertgate doctor: what was found, in the order it was looked for.

import { parseArgs } from 'node:util';

import { oversubscription, parseOptions } from '../options.js';
import { placements, resolveDevices } from '../replicas.js';
import { doctor, type DoctorReport } from '../runtime/doctor.js';
import type { NativeCpuCache } from '../binding.js';
import { formatSteps } from '../runtime/libtorch.js';
import { RUNTIME_FLAGS, classifierOptions } from './options.js';

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean' },
      device: RUNTIME_FLAGS.device,
      replicas: RUNTIME_FLAGS.replicas,
      threads: RUNTIME_FLAGS.threads,
    },
    strict: true,
  });
  // The flags a model would load with: checked first, placed once the runtime says what it sees.
  const settings = parseOptions(classifierOptions(values).options);
  const report: DoctorReport & {
    replicas?: ReturnType<typeof placements>;
    threadsPerReplica?: number;
    /** Set when replicas x threads exceed the cores: a load would warn the same. */
    oversubscribed?: string;
  } = await doctor();
  if (report.ok && report.runtime) {
    try {
      const devices =
        settings.device === 'cuda' ? resolveDevices(settings.deviceIndices, report.runtime.cudaDeviceCount) : [0];
      report.replicas = placements({
        kind: settings.device,
        devices,
        perDevice: settings.replicas,
        threads: settings.threads,
      });
      report.threadsPerReplica = settings.threads;
      const note = oversubscription(settings);
      if (note) report.oversubscribed = note;
    } catch (error) {
      report.ok = false;
      report.problem = (error as Error).message;
    }
  }
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
  const mkl = addon.build?.mklAnyCpu;
  lines.push(
    mkl
      ? `MKL any CPU      on (BERTGATE_MKL_ANY_CPU=1): ${mkl.file}, asked ${mkl.calls} time(s) so far`
      : process.env['BERTGATE_MKL_ANY_CPU']
        ? `MKL any CPU      asked (BERTGATE_MKL_ANY_CPU=${JSON.stringify(process.env['BERTGATE_MKL_ANY_CPU'])}) but not loaded`
        : 'MKL any CPU      off (BERTGATE_MKL_ANY_CPU=1 lets MKL use AVX2/AVX-512 on CPUs not made by Intel)',
  );
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
    lines.push(`  CPU allocator  ${cpuAllocator(r.cpuCache)}`);
    for (const warning of r.torchWarnings) lines.push(`  torch warning  ${warning}`);
  }
  if (report.replicas) {
    const { replicas } = report;
    const shared = settings.device === 'cpu' && replicas.length > 1 ? ', sharing one copy of the weights' : '';
    lines.push(
      `replicas         ${replicas.length}, ${report.threadsPerReplica} intra-op thread(s) each${shared} (--device, --replicas, --threads)`,
    );
    for (const r of replicas) lines.push(`  ${String(r.replica).padEnd(4)} ${r.device}`);
    if (report.oversubscribed) lines.push(`  note: ${report.oversubscribed}`);
  }
  lines.push(report.ok ? 'ok' : `PROBLEM: ${report.problem}`);
  (report.ok ? process.stdout : process.stderr).write(lines.join('\n') + '\n');
  return report.ok ? 0 : 1;
}

/** The doctor's line for libtorch's CPU allocator: what the first load installs, or has. */
function cpuAllocator(cache: NativeCpuCache): string {
  const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  if (cache.installed) {
    return `bertgate's bounded cache: ${mib(cache.liveBytes)} live (peak ${mib(cache.peakLiveBytes)}), ${mib(cache.cachedBytes)} cached of at most ${mib(cache.cacheLimitBytes)}; ${cache.reused} reused, ${cache.mapped} mapped`;
  }
  // A value the engine does not know stops the doctor before this line (engine-switches.ts).
  if (process.env['BERTGATE_CPU_ALLOCATOR'] === 'system') return "libtorch's own (BERTGATE_CPU_ALLOCATOR=system)";
  return "bertgate's bounded cache of large buffers, from the first load (BERTGATE_CPU_ALLOCATOR=system keeps libtorch's own)";
}
