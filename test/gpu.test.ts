// The model on a CUDA device, against the Python reference computed on the CPU and against the
// same classifier on the CPU. Skipped where there is no CUDA device (scripts/gpu-check.sh runs
// it on the GPU machines).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { doctor } from '../lib/runtime/doctor.js';
import { Classifier, type ClassifierOptions, type Decision, DeviceUnavailableError } from '../lib/index.js';
import { bundle, expected, maxAbsDiff } from './helpers.js';

const report = await doctor();
const devices = report.runtime?.cudaAvailable ? report.runtime.cudaDeviceCount : 0;
const skip = devices === 0 ? 'no CUDA device' : false;

/** The bundle `name` on the CPU and on the GPU, both closed after `use` whatever it does. */
async function onCpuAndGpu(
  name: string,
  cpuOptions: ClassifierOptions,
  gpuOptions: ClassifierOptions,
  use: (cpu: Classifier, gpu: Classifier) => Promise<void>,
): Promise<void> {
  const cpu = await Classifier.load(bundle(name), cpuOptions);
  const gpu = await Classifier.load(bundle(name), { device: 'cuda', ...gpuOptions });
  try {
    await use(cpu, gpu);
  } finally {
    await cpu.close();
    await gpu.close();
  }
}

/** At least 90% of the texts get the same top label from both. */
function assertTopLabelsAgree(a: readonly Decision[], b: readonly Decision[]): void {
  const agree = a.filter((d, i) => d.top[0]?.label === b[i]?.top[0]?.label).length;
  assert.ok(agree / a.length >= 0.9, `${agree} of ${a.length} top labels agree`);
}

describe('on a CUDA device', { skip }, () => {
  it('float32 logits match transformers eager (CPU) within 1e-4, batched and single', async () => {
    const ref = await expected('labels50');
    const clf = await Classifier.load(bundle('labels50'), { device: 'cuda', dtype: 'float32', maxBatchSize: 33 });
    try {
      assert.equal(clf.info.device, 'cuda:0');
      const rows = await clf.logits(ref.texts);
      rows.forEach((row, i) => assert.ok(maxAbsDiff(row, ref.logits[i] as number[]) <= 1e-4, `text ${i}`));
      const single = await clf.logits(ref.texts[5] as string);
      assert.ok(maxAbsDiff(single, rows[5] as Float32Array) <= 1e-4);
    } finally {
      await clf.close();
    }
  });

  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`${dtype} weights give the CPU's decisions, probabilities within 2e-2`, async () => {
      const ref = await expected('labels7');
      await onCpuAndGpu('labels7', { topK: 7 }, { dtype, topK: 7 }, async (cpu, gpu) => {
        const [a, b] = await Promise.all([cpu.classify(ref.texts), gpu.classify(ref.texts)]);
        a.forEach((d, i) => {
          const g = b[i];
          assert.ok(
            g && Math.abs(d.probability - g.probability) < 2e-2,
            `text ${i}: ${d.probability} vs ${g?.probability}`,
          );
        });
        assertTopLabelsAgree(a, b);
      });
    });
  }

  it("the fused CUDA kernel gives the CPU kernel's scores", async () => {
    const ref = await expected('labels50');
    const gpuOptions: ClassifierOptions = { dtype: 'float32', topK: 5, temperature: 1.7 };
    await onCpuAndGpu('labels50', { topK: 5, temperature: 1.7 }, gpuOptions, async (cpu, gpu) => {
      const [a, b] = await Promise.all([cpu.classify(ref.texts), gpu.classify(ref.texts)]);
      a.forEach((d, i) => {
        const g = b[i];
        assert.ok(d.scores && g?.scores);
        assert.deepEqual(
          g.top.map((t) => t.label),
          d.top.map((t) => t.label),
          `text ${i}`,
        );
        assert.ok(Math.abs(d.scores.entropy - g.scores.entropy) < 1e-4);
        assert.ok(Math.abs(d.scores.energy - g.scores.energy) < 1e-3);
        assert.ok(Math.abs(d.scores.margin - g.scores.margin) < 1e-4);
      });
    });
  });

  it('defaults to float16, batches of 256 and 32-token buckets, and warms up at load', async () => {
    await onCpuAndGpu('labels50', {}, { topK: 5 }, async (clf, gpu) => {
      assert.equal(gpu.info.dtype, 'float16');
      assert.equal(gpu.info.batching.maxBatchSize, 256);
      assert.equal(gpu.info.batching.padToMultipleOf, 32);
      const ref = await expected('labels50');
      const [a, b] = await Promise.all([clf.classify(ref.texts), gpu.classify(ref.texts)]);
      assertTopLabelsAgree(a, b);
    });
  });

  it('keeps several batches queued on its own stream and answers each as if alone', async () => {
    const ref = await expected('labels50');
    const clf = await Classifier.load(bundle('labels50'), {
      device: 'cuda',
      dtype: 'float32',
      maxBatchSize: 4,
      batchesInFlight: 8,
    });
    try {
      const texts = Array.from({ length: 400 }, (_, i) => ref.texts[i % ref.texts.length] as string);
      const rows = await Promise.all(texts.map((t) => clf.logits(t)));
      rows.forEach((row, i) =>
        assert.ok(maxAbsDiff(row, ref.logits[i % ref.texts.length] as number[]) <= 1e-4, `${i}`),
      );
      assert.ok(clf.stats().batches >= 100);
    } finally {
      await clf.close();
    }
  });

  it('marks NaN rows invalid on the device too', async () => {
    const clf = await Classifier.load(bundle('nan'), { device: 'cuda' });
    try {
      const [ok, bad] = await clf.classify(['install the package', 'hieroglyph 𓀀 here']);
      assert.equal(ok?.accepted, true);
      assert.equal(bad?.accepted === false && bad.reason, 'invalid');
    } finally {
      await clf.close();
    }
  });

  it('names a device index that does not exist', async () => {
    await assert.rejects(
      Classifier.load(bundle('labels2'), { device: `cuda:${devices}` }),
      (e: unknown) =>
        e instanceof DeviceUnavailableError &&
        e.message.startsWith(`device 'cuda:${devices}' does not exist: libtorch sees ${devices} GPU`),
    );
  });

  it("replicas on every device ('cuda:*', two per device) answer as one does, and each takes batches", async () => {
    const ref = await expected('labels50');
    const texts = [...ref.texts, ...ref.texts, ...ref.texts, ...ref.texts];
    const one = await Classifier.load(bundle('labels50'), { device: 'cuda', dtype: 'float32', maxBatchSize: 4 });
    const many = await Classifier.load(bundle('labels50'), {
      device: 'cuda:*',
      replicas: 2,
      dtype: 'float32',
      maxBatchSize: 4,
    });
    try {
      assert.equal(many.info.replicas.length, 2 * devices);
      assert.deepEqual(
        [...new Set(many.info.replicas.map((r) => r.device))],
        Array.from({ length: devices }, (_, i) => `cuda:${i}`),
      );
      const calls = Array.from({ length: 16 }, (_, k) => texts.filter((_, i) => i % 16 === k));
      const [a, b] = await Promise.all([
        Promise.all(calls.map((c) => one.logits(c))),
        Promise.all(calls.map((c) => many.logits(c))),
      ]);
      a.flat().forEach((row, i) => assert.ok(maxAbsDiff(row, b.flat()[i] as Float32Array) <= 1e-4, `text ${i}`));
      for (const r of many.stats().replicas) assert.ok(r.batches > 0, `replica ${r.replica} (${r.device}) took none`);
    } finally {
      await Promise.all([one.close(), many.close()]);
    }
  });
});
