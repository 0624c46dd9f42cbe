/**
 * What bertgate finds on this machine, step by step: the addon, the libtorch lookup, CUDA,
 * threads. `bertgate doctor` prints it; a failure names the step that failed and why.
 */

import { availableParallelism } from 'node:os';

import { pickAddon, type AddonCandidate, type AddonSource } from './addon-path.js';
import { PACKAGE_ROOT, loadAddon, openRuntime, type NativeBuildInfo, type NativeRuntimeInfo } from './binding.js';
import { findLibtorch, type LookupStep } from './libtorch.js';

export interface DoctorReport {
  ok: boolean;
  /** The first thing that failed, in words; absent when ok. */
  problem?: string;
  /** The addon chosen (source: which rule chose it) and every place looked at, in order. */
  addon: { path: string; source: AddonSource | undefined; candidates: AddonCandidate[]; build?: NativeBuildInfo };
  libtorch: { steps: LookupStep[]; dir?: string; version?: string | null; source?: string };
  cuda?: { loaded: boolean; reason: string };
  runtime?: NativeRuntimeInfo;
  /** The intra-op threads a Classifier uses unless told otherwise. */
  defaultThreads: number;
  cpus: number;
}

export async function doctor(): Promise<DoctorReport> {
  const { chosen, candidates } = pickAddon(PACKAGE_ROOT);
  const report: DoctorReport = {
    ok: false,
    addon: { path: (chosen ?? (candidates[0] as AddonCandidate)).path, source: chosen?.source, candidates },
    libtorch: { steps: [] },
    defaultThreads: Math.max(1, availableParallelism() - 1),
    cpus: availableParallelism(),
  };
  try {
    report.addon.build = loadAddon().buildInfo();
  } catch (error) {
    report.problem = (error as Error).message;
    return report;
  }
  try {
    const runtime = await openRuntime();
    report.libtorch = {
      steps: runtime.steps,
      dir: runtime.libtorch.dir,
      version: runtime.libtorch.version,
      source: runtime.libtorch.source,
    };
    report.cuda = runtime.cuda;
    report.addon.build = runtime.addon.buildInfo();
    const handle = new runtime.addon.EngineHandle();
    try {
      report.runtime = await handle.runtime();
    } finally {
      await handle.close();
    }
    report.ok = true;
  } catch (error) {
    report.problem = (error as Error).message;
    // Show the lookup even when opening failed after it.
    if (report.libtorch.steps.length === 0) report.libtorch.steps = (await findLibtorch()).steps;
  }
  return report;
}
