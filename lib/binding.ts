/**
 * The native boundary, typed in one place. native/addon/*.cpp implements exactly this; the
 * values passed in are already validated and normalised (see classifier.ts), so the native
 * side trusts them. Which addon is loaded, and how the runtime behind it is opened, is
 * runtime/open.ts's business.
 */

/** The addon's own build: the same whichever libtorch it runs on. */
export interface NativeBuildInfo {
  cxx11Abi: boolean;
  buildSystem: string;
  compiler: string;
  napiVersion: number;
  /** Empty until an engine is open. */
  engineLibrary: string;
  /** What the open engine was compiled as; null until one is open. */
  engine: { torchVersion: string; cudaKernels: boolean } | null;
  /** BERTGATE_MKL_ANY_CPU=1: the MKL shim loaded, and how many times MKL asked it; else null. */
  mklAnyCpu: { file: string; calls: number } | null;
}

export interface NativeLoadOptions {
  modelPath: string;
  device: 'cpu' | 'cuda';
  deviceIndex: number;
  dtype: 'float32' | 'float16' | 'bfloat16';
  threads: number;
  freeze: boolean;
  /** CUDA: the share of device memory the caching allocator may hold; 0 for no limit. */
  cudaMemoryFraction: number;
  /** libtorch's warnings printed to stderr as well as collected (BERTGATE_TORCH_WARNINGS=stderr). */
  torchWarningsToStderr: boolean;
  /** int8 bundles' activations in 7 bits even where the CPU takes 8 (BERTGATE_INT8_ACTIVATION_BITS=7). */
  int8SevenBits: boolean;
  /**
   * The GEMM of bertgate::linear_int8 layers (BERTGATE_INT8_GEMM): '' the fastest here (AMX where the CPU has
   * it, else fbgemm's), 'amx' or 'fbgemm' (or the load fails with DeviceUnavailableError), 'onednn'. The
   * same logits whichever runs.
   */
  int8GemmRequested: '' | 'amx' | 'fbgemm' | 'onednn';
  /**
   * libtorch's CPU allocator is bertgate's caching one (false: libtorch's own,
   * BERTGATE_CPU_ALLOCATOR=system). Process-wide: the first load chooses; a later load asking
   * otherwise fails with ERR_LIBTORCH_CONFLICT.
   */
  cpuCache: boolean;
  /** A forward pass at [warmupRows, warmupSeqLen] after the load probe; 0 rows for none. */
  warmupRows: number;
  warmupSeqLen: number;
  /** The out-of-distribution gate: projection [gateDim, width], class centres [classes, gateDim]; gateDim 0: none. */
  gateDim: number;
  gateProjection?: Float32Array;
  gateCentres?: Float32Array;
}

export interface NativeModelInfo {
  loader: string;
  device: string;
  dtype: string;
  outputKind: 'tensor' | 'tuple' | 'dict';
  logitsDtype: string;
  numLabels: number;
  frozen: boolean;
  /** The graph runs quantized (int8) operators. */
  quantized: boolean;
  /**
   * int8: the bits its Linear layers quantize activations to: 8 for today's bundles
   * (bertgate::linear_int8) on every CPU; for torch.ao bundles 8 where the CPU has AVX-512 VNNI
   * and they were exported with 8, else 7 (and with BERTGATE_INT8_ACTIVATION_BITS=7). 0 for a
   * float model.
   */
  int8ActivationBits: number;
  /**
   * int8: the operator of its int8 layers, 'bertgate::linear_int8' or, for bundles exported
   * before it, 'quantized::linear_dynamic'; '' for a float model.
   */
  int8Op: string;
  /**
   * int8 with 'bertgate::linear_int8': the integer GEMM its layers run on this CPU, 'amx' (the
   * engine's own, on CPUs with AMX), 'fbgemm' (weights packed once at load, on other x86-64 CPUs) or
   * 'onednn' (BERTGATE_INT8_GEMM=onednn, or weights read afresh on every call). The same logits whichever,
   * to the bit; only the speed differs. '' for other models.
   */
  int8Gemm: string;
  /** Width of the pooled features the model returns beside its logits; 0 when it returns none. */
  featureWidth: number;
  /** -1 where the module has no such embedding table. */
  vocabRows: number;
  positionRows: number;
  typeVocabRows: number;
  /**
   * libtorch's warnings while this model loaded (an int8 bundle's deprecation notice on torch
   * >= 2.13), collected by the engine instead of printed to stderr; a warning libtorch raises
   * once per process shows on the first load only (NativeRuntimeInfo keeps them all).
   */
  torchWarnings: string[];
}

export interface NativeInferRequest {
  /**
   * [3, rows, seqLen], row-major: token ids, attention mask (0/1), token type ids; copied by
   * the addon before the call returns.
   */
  tokens: Int32Array;
  rows: number;
  seqLen: number;
  temperature: number;
  /** 1 <= topK <= min(64, labels). */
  topK: number;
  wantLogits: boolean;
  wantLogProbs: boolean;
  /** The pooled features [rows * featureWidth]: the model must return them. */
  wantFeatures: boolean;
}

/** Views over native memory, handed over without a copy. */
export interface NativeInferResult {
  rows: number;
  cols: number;
  topK: number;
  topIndex: Int32Array;
  topLogProb: Float32Array;
  margin: Float32Array;
  entropy: Float32Array;
  energy: Float32Array;
  valid: Uint8Array;
  /** Empty unless wantLogits. */
  logits: Float32Array;
  /** Empty unless wantLogProbs. */
  logProbs: Float32Array;
  /** Empty unless wantFeatures. */
  features: Float32Array;
  /** With a gate: its score per row (higher: further from the calibration texts); else empty. */
  oodScore: Float32Array;
  forwardMs: number;
  /** The process's CPU allocator once this batch's tensors were freed. */
  cpuCache: NativeCpuCache;
}

/**
 * libtorch's CPU allocator in this process (native/engine/cpu_allocator.h): buffers of 128 KiB and
 * more are kept for reuse, the cache held to max(128 MiB, 2 x peakLiveBytes), a buffer idle in it for 30 s
 * unmapped. Process-wide; a snapshot taken when this batch's tensors were freed.
 */
export interface NativeCpuCache {
  /** false where BERTGATE_CPU_ALLOCATOR=system kept libtorch's own allocator. */
  installed: boolean;
  liveBytes: number;
  peakLiveBytes: number;
  cachedBytes: number;
  cacheLimitBytes: number;
  /** Large requests served from the cache. */
  reused: number;
  /** Large requests that mapped fresh memory. */
  mapped: number;
  /** Cached buffers handed back to the kernel: to keep the bound, idle for 30 s, or trimmed (a close, a refused mapping). */
  unmapped: number;
}

export interface NativeRuntimeInfo {
  torchVersion: string;
  cxx11Abi: boolean;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  intraOpThreads: number;
  interopThreads: number;
  parallelInfo: string;
  /** Every distinct libtorch warning the engine collected in this process so far (at most 32). */
  torchWarnings: string[];
  cpuCache: NativeCpuCache;
}

export interface NativeEngineHandle {
  load(options: NativeLoadOptions): Promise<NativeModelInfo>;
  /**
   * A replica of `source`'s loaded model (its weights and gate, not a copy) run on this handle's
   * own thread with `threads` intra-op threads: CPU replicas share one model this way.
   */
  loadReplica(source: NativeEngineHandle, threads: number): Promise<NativeModelInfo>;
  infer(request: NativeInferRequest): Promise<NativeInferResult>;
  runtime(): Promise<NativeRuntimeInfo>;
  close(): Promise<void>;
}

export interface NativeAddon {
  /** `mklAnyCpu`: the MKL shim's path, loaded before libtorch into the global scope; '' for none. */
  openRuntime(preload: string[], engineLibrary: string, mklAnyCpu: string): Promise<void>;
  /** Drops queued native work and waits for forward passes under way; for process exit. */
  quiesce(): void;
  buildInfo(): NativeBuildInfo;
  EngineHandle: new () => NativeEngineHandle;
}
