/**
 * What bertgate finds on this machine, step by step: the addon, the libtorch lookup, the
 * engine chosen for that libtorch (and why each other one does not fit), CUDA, threads.
 * `bertgate doctor` prints it; a failure names the step that failed and why.
 */

import { dirname } from 'node:path';
import { availableParallelism } from 'node:os';

import type { NativeBuildInfo, NativeRuntimeInfo } from '../binding.js';
import { chooseAddon, type AddonSource } from './addon-path.js';
import { chooseEngine, readEngines, type EngineChoice } from './engines.js';
import { cudaDecision, findLibtorch, readCxx11Abi, type LookupResult, type LookupStep } from './libtorch.js';
import { loadAddon, openRuntime } from './open.js';
import { PACKAGE_ROOT } from './package-root.js';
import { DEFAULT_THREADS } from './threads.js';

export interface DoctorReport {
  ok: boolean;
  /** The first thing that failed, in words; absent when ok. */
  problem?: string;
  /** The addon chosen (source: which rule chose it), or why there is none. */
  addon: {
    path: string | undefined;
    source: AddonSource | undefined;
    problem: string | undefined;
    build?: NativeBuildInfo;
  };
  libtorch: { steps: LookupStep[]; dir?: string; version?: string | null; source?: string };
  /** The engines beside the addon, each with why it fits this libtorch or not, and the one chosen. */
  engines?: EngineSummary;
  cuda?: { loaded: boolean; reason: string };
  runtime?: NativeRuntimeInfo;
  /** The intra-op threads a Classifier uses unless told otherwise. */
  defaultThreads: number;
  cpus: number;
}

export type EngineSummary = Pick<EngineChoice, 'manifest' | 'candidates' | 'reason'> & { chosen: string | undefined };

function summary(choice: EngineChoice): EngineSummary {
  return {
    manifest: choice.manifest,
    candidates: choice.candidates,
    reason: choice.reason,
    chosen: choice.chosen?.file,
  };
}

export async function doctor(): Promise<DoctorReport> {
  const report: DoctorReport = {
    ok: false,
    addon: chooseAddon(PACKAGE_ROOT),
    libtorch: { steps: [] },
    defaultThreads: DEFAULT_THREADS,
    cpus: availableParallelism(),
  };
  try {
    report.addon.build = loadAddon().native.buildInfo();
  } catch (error) {
    report.problem = (error as Error).message;
    return report;
  }
  // Asked once: a Python that does not answer costs its timeout once, not once per step.
  const env = { ...process.env };
  let lookup: LookupResult | undefined;
  try {
    lookup = await findLibtorch(env);
    report.libtorch = { steps: lookup.steps };
    const runtime = await openRuntime(env, lookup);
    report.libtorch = {
      steps: runtime.steps,
      dir: runtime.libtorch.dir,
      version: runtime.libtorch.version,
      source: runtime.libtorch.source,
    };
    report.engines = summary(runtime.engine);
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
    if (lookup) await explain(report, lookup, env);
  }
  return report;
}

/** After a failure, the lookup and the engine list as far as they go, without loading anything. */
async function explain(report: DoctorReport, { location, steps }: LookupResult, env: NodeJS.ProcessEnv): Promise<void> {
  if (!location || !report.addon.path || report.engines) return;
  report.libtorch = { steps, dir: location.dir, version: location.version, source: location.source };
  try {
    const traits = { ...location, cxx11Abi: await readCxx11Abi(location.dir) };
    const addonDir = dirname(report.addon.path);
    const decision = cudaDecision(location, env);
    report.engines = summary(chooseEngine(readEngines(addonDir), addonDir, traits, decision.load, env));
  } catch {
    // The problem already says why the engines could not be listed.
  }
}
