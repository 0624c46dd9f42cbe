/**
 * A classifier's replicas: one engine each, across its devices, fed by the classifier's one
 * batcher. A formed batch goes to the healthy replica with the fewest batches in flight
 * (pull, as Triton's dynamic batcher feeds its instance groups): a slower device simply comes
 * free less often, so unequal devices balance themselves, with no router or weights to tune.
 *
 * Health. A batch that fails with an engine fault (not out-of-memory: that splits the batch
 * on its replica; not bad input: that never reaches a replica) suspends its replica, which is
 * then probed with a one-text batch, and the probe says whose fault it was. A replica that cannot
 * run even that is taken out for good (its failure kept for stats, a process warning and the
 * metrics), and the batch moves to a healthy replica it has not tried. A replica that can was
 * failed by its batch: it comes back, and the batch fails as a batch fault (isBatchFault), which
 * the classifier splits in halves down to the text that fails, so its batch-mates are answered.
 * A fault that leaves no replica healthy fails its batch with NoHealthyReplicaError, as every
 * later call does (serve: 503).
 */

import type { NativeEngineHandle, NativeInferRequest, NativeModelInfo } from './binding.js';
import { DeviceUnavailableError, NoHealthyReplicaError } from './errors.js';

/** The native failures that say something about the replica that ran the batch. */
const ENGINE_FAULTS = new Set([
  'ERR_INFERENCE',
  'ERR_INTERNAL',
  'ERR_DEVICE_UNAVAILABLE',
  'ERR_MODEL_OUTPUT',
  'ERR_CLOSED',
]);

export function isEngineFault(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && ENGINE_FAULTS.has(code);
}

/** A suspended replica is taken out after failing this many one-text probes in a row, this far apart. */
const PROBE_ATTEMPTS = 3;
const PROBE_PAUSE_MS = 50;

/**
 * The batch failed on a replica that then answered its one-text probe: a text in it is at
 * fault, not the replica. Never reaches a caller: the classifier splits the batch on it, and
 * the one text it comes down to fails with textAtFault's error.
 */
class BatchFault extends Error {
  constructor(
    readonly where: string,
    readonly fault: Error,
  ) {
    super(`the batch failed on ${where}: ${fault.message}`);
  }
}

export function isBatchFault(error: unknown): boolean {
  return error instanceof BatchFault;
}

/** The error of the one text a batch fault was split down to: it blames the text, not the replica. */
export function textAtFault(error: Error): Error {
  if (!(error instanceof BatchFault)) return error;
  return Object.assign(
    new Error(
      `the model cannot run this text (${error.where} runs others; its batch-mates were answered): ${error.fault.message}`,
    ),
    { code: 'ERR_UNPROCESSABLE_TEXT' },
  );
}

export interface ReplicaStats {
  /** Its position in `info.replicas`: devices in the order listed, `replicas` per device. */
  replica: number;
  device: string;
  /**
   * Batches and texts it ran to the end (a moved batch counts where it was answered). A text
   * whose caller gave up (timeout, abort) still counts: the device did the work, while the
   * classifier's `texts.completed` counts answers delivered.
   */
  batches: number;
  texts: number;
  /** Wall time it had at least one batch in flight. */
  busyMs: number;
  inFlight: number;
  healthy: boolean;
  /**
   * Faults of its own: one-text probes it failed after an engine fault. A batch whose text the
   * model cannot run (the probe then passes) is not counted here but in the classifier's
   * `faultSplits`, so an alert on replica faults does not page on one client's text.
   */
  faults: number;
  /** Why it was taken out, or null while healthy. */
  failure: string | null;
}

export type Forward<R> = (handle: NativeEngineHandle) => Promise<R>;

class Replica {
  inFlight = 0;
  batches = 0;
  texts = 0;
  busyMs = 0;
  faults = 0;
  healthy = true;
  /** Off the rota while a probe decides whether the fault was the replica's. */
  suspended = false;
  /** The probe under way while suspended. */
  probe: Promise<void> = Promise.resolve();
  failure: string | null = null;
  #busySince = 0;

  constructor(
    readonly index: number,
    readonly device: string,
    readonly handle: NativeEngineHandle,
  ) {}

  get available(): boolean {
    return this.healthy && !this.suspended;
  }

  start(): void {
    if (this.inFlight++ === 0) this.#busySince = performance.now();
  }

  end(): void {
    if (--this.inFlight === 0) this.busyMs += performance.now() - this.#busySince;
  }

  stats(): ReplicaStats {
    const open = this.inFlight > 0 ? performance.now() - this.#busySince : 0;
    return {
      replica: this.index,
      device: this.device,
      batches: this.batches,
      texts: this.texts,
      busyMs: this.busyMs + open,
      inFlight: this.inFlight,
      healthy: this.healthy,
      faults: this.faults,
      failure: this.failure,
    };
  }
}

export interface ReplicaPlan {
  kind: 'cpu' | 'cuda';
  /** Device indices, in order (CPU: [0]). */
  devices: readonly number[];
  perDevice: number;
  threads: number;
}

/** Where each replica of a plan runs, in replica order: devices as listed, `perDevice` on each. */
export function placements(plan: ReplicaPlan): { replica: number; device: string; deviceIndex: number }[] {
  const devices = plan.kind === 'cpu' ? [0] : plan.devices;
  return devices.flatMap((deviceIndex, d) =>
    Array.from({ length: plan.perDevice }, (_, i) => ({
      replica: d * plan.perDevice + i,
      device: plan.kind === 'cpu' ? 'cpu' : `cuda:${deviceIndex}`,
      deviceIndex,
    })),
  );
}

export class ReplicaSet {
  readonly #replicas: Replica[];
  readonly #probe: NativeInferRequest;
  readonly #probes = new Set<Promise<void>>();
  readonly #onChange: () => void;

  private constructor(replicas: Replica[], probe: NativeInferRequest, onChange: () => void) {
    this.#replicas = replicas;
    this.#probe = probe;
    this.#onChange = onChange;
  }

  /**
   * Loads every replica of `plan` (GPU: one model per replica, each with its own stream; CPU:
   * the first loads, the others share its weights on threads of their own), or none: a
   * failure closes the ones made and throws the first error.
   */
  static async load(
    plan: ReplicaPlan,
    makeHandle: () => NativeEngineHandle,
    load: (handle: NativeEngineHandle, deviceIndex: number) => Promise<NativeModelInfo>,
  ): Promise<{ handles: { handle: NativeEngineHandle; device: string }[]; model: NativeModelInfo }> {
    const made: { handle: NativeEngineHandle; device: string }[] = [];
    try {
      let model: NativeModelInfo;
      const where = placements(plan);
      if (plan.kind === 'cpu') {
        // The first loads the weights; the others share them, each on a thread of its own.
        const first = makeHandle();
        made.push({ handle: first, device: 'cpu' });
        model = await load(first, 0);
        for (const { device } of where.slice(1)) {
          const handle = makeHandle();
          made.push({ handle, device });
          await handle.loadReplica(first, plan.threads);
        }
      } else {
        const loads = where.map(({ device, deviceIndex }) => {
          const handle = makeHandle();
          made.push({ handle, device });
          return load(handle, deviceIndex);
        });
        const settled = await Promise.allSettled(loads);
        const failed = settled.find((s) => s.status === 'rejected');
        if (failed) throw failed.reason;
        model = (settled[0] as PromiseFulfilledResult<NativeModelInfo>).value;
      }
      return { handles: made, model };
    } catch (error) {
      await Promise.allSettled(made.map(({ handle }) => handle.close()));
      throw error;
    }
  }

  static from(
    handles: { handle: NativeEngineHandle; device: string }[],
    probe: NativeInferRequest,
    onChange: () => void,
  ): ReplicaSet {
    return new ReplicaSet(
      handles.map(({ handle, device }, i) => new Replica(i, device, handle)),
      probe,
      onChange,
    );
  }

  get size(): number {
    return this.#replicas.length;
  }

  get healthy(): number {
    return this.#replicas.filter((r) => r.healthy).length;
  }

  /** How many take batches now. */
  get available(): number {
    return this.#replicas.filter((r) => r.available).length;
  }

  devices(): { replica: number; device: string }[] {
    return this.#replicas.map((r) => ({ replica: r.index, device: r.device }));
  }

  stats(): ReplicaStats[] {
    return this.#replicas.map((r) => r.stats());
  }

  /**
   * Runs `forward` (a batch, with its out-of-memory splitting) on the available replica with
   * the fewest batches in flight. An engine fault suspends that replica until its one-text
   * probe answers: a replica the probe takes out passes the batch to another it has not tried
   * (two replicas that broke together cannot fail a batch while a third is healthy); one the
   * probe brings back was failed by the batch itself, which then fails as a batch fault.
   */
  async run<R>(texts: number, forward: Forward<R>): Promise<R> {
    const tried = new Set<Replica>();
    for (;;) {
      // Picked and started in the same tick: batches formed together spread over the replicas.
      const replica = this.#pick(tried) ?? (await this.#wait(tried));
      let fault: Error;
      replica.start();
      try {
        const result = await forward(replica.handle);
        replica.batches++;
        replica.texts += texts;
        return result;
      } catch (error) {
        if (!isEngineFault(error)) throw error;
        fault = error as Error;
      } finally {
        replica.end();
      }
      tried.add(replica);
      if (replica.available) this.#suspend(replica);
      await replica.probe;
      if (replica.healthy) throw new BatchFault(`replica ${replica.index} (${replica.device})`, fault);
      if (this.healthy === 0) throw this.noneHealthy();
    }
  }

  /** The replica for the next batch once one not yet `tried` is free: every other healthy one is being probed. */
  async #wait(tried: ReadonlySet<Replica>): Promise<Replica> {
    for (;;) {
      if (this.#probes.size === 0) throw this.noneHealthy();
      await Promise.race(this.#probes);
      const replica = this.#pick(tried);
      if (replica) return replica;
      if (!this.#replicas.some((r) => r.healthy && !tried.has(r))) throw this.noneHealthy();
    }
  }

  /** For a test only (classifier.ts's sabotageReplica): the replica's engine closed under it, a real native fault. */
  async sabotage(index: number): Promise<void> {
    const replica = this.#replicas[index];
    if (!replica) throw new RangeError(`no replica ${index}`);
    await replica.handle.close();
  }

  /** Waits for the probes under way, then closes every replica's engine (the batcher has drained). */
  async close(): Promise<void> {
    while (this.#probes.size > 0) await Promise.allSettled([...this.#probes]);
    await Promise.allSettled(this.#replicas.map((r) => r.handle.close()));
  }

  #pick(tried?: ReadonlySet<Replica>): Replica | undefined {
    let best: Replica | undefined;
    for (const r of this.#replicas) {
      if (r.available && !tried?.has(r) && (!best || r.inFlight < best.inFlight)) best = r;
    }
    return best;
  }

  noneHealthy(): NoHealthyReplicaError {
    const why = this.#replicas.map((r) => `${r.index} (${r.device}): ${r.failure ?? 'suspended'}`).join('; ');
    return new NoHealthyReplicaError(`no healthy replica is left to run the batch: ${why}`);
  }

  #suspend(replica: Replica): void {
    replica.suspended = true;
    this.#onChange();
    const probe = (async () => {
      // A few tries, a moment apart: one transient failure of a one-text batch must not take a
      // replica out for good, which would wear a long-running pod down to none.
      let failed: Error | undefined;
      for (let attempt = 0; attempt < PROBE_ATTEMPTS; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, PROBE_PAUSE_MS));
        try {
          await replica.handle.infer(this.#probe);
          failed = undefined;
          break;
        } catch (error) {
          if (attempt === 0) replica.faults++;
          failed = error as Error;
        }
      }
      replica.suspended = false;
      if (failed) {
        replica.healthy = false;
        // What the replica itself raises, not the batch's error (which may be the batch's own).
        replica.failure = `${(failed as { code?: string }).code ?? 'ERR_INTERNAL'}: ${failed.message}`;
        process.emitWarning(
          `replica ${replica.index} (${replica.device}) was taken out: after an engine fault it failed a one-text ` +
            `batch ${PROBE_ATTEMPTS} times: ${replica.failure}; ${this.healthy} of ${this.size} replicas remain`,
          { type: 'BertgateReplicaWarning', code: 'ERR_REPLICA_FAILED' },
        );
      }
      this.#onChange();
    })();
    replica.probe = probe;
    this.#probes.add(probe);
    void probe.finally(() => this.#probes.delete(probe));
  }
}

/** The CUDA devices a plan names, checked against the devices this process sees. */
export function resolveDevices(asked: readonly number[] | 'all', visible: number): number[] {
  if (asked === 'all') {
    if (visible === 0)
      throw new DeviceUnavailableError(`device 'cuda:*' asks for every visible GPU, but libtorch sees none`);
    return Array.from({ length: visible }, (_, i) => i);
  }
  const missing = asked.find((i) => i >= visible);
  if (missing !== undefined) {
    throw new DeviceUnavailableError(
      visible === 0
        ? `device 'cuda:${missing}' was requested but libtorch sees no CUDA device in this process`
        : `device 'cuda:${missing}' does not exist: libtorch sees ${visible} GPU${visible === 1 ? '' : 's'} ` +
            `(cuda:0${visible > 1 ? ` to cuda:${visible - 1}` : ''})`,
    );
  }
  return [...asked];
}
