// deploy/kubernetes/: the manifests are valid against real schemas, offline: the Kubernetes
// objects against Kubernetes 1.30's with kubernetes-validate --strict (a misspelled field is an
// error; preStop.sleep and the like need 1.30), and KEDA's ScaledObject against the schema
// @kubernetes-models/keda compiles from KEDA's CRD. And they agree with each other: KEDA scales
// the Deployment it names, on the wait list of the queue the worker takes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { loadAll } from 'js-yaml';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';

const MANIFEST = join(PACKAGE_ROOT, 'deploy', 'kubernetes', 'worker.yaml');
const VALIDATE = join(PACKAGE_ROOT, '.venv', 'bin', 'kubernetes-validate');
const KUBERNETES = '1.30.0';

function kubernetesValidate(file: string): { code: number | null; out: string } {
  const r = spawnSync(VALIDATE, ['--strict', '-k', KUBERNETES, file], { encoding: 'utf8' });
  if (r.error) throw r.error; // not installed: set-up puts it in .venv (requirements.txt)
  return { code: r.status, out: r.stdout + r.stderr };
}

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: Record<string, unknown>;
}

describe('deploy/kubernetes', () => {
  it(`validates strictly against Kubernetes ${KUBERNETES}, and a misspelled field would be caught`, async () => {
    const r = kubernetesValidate(MANIFEST);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /passed for resource deployment\/bertgate-worker against version 1\.30/);
    const dir = await mkdtemp(join(tmpdir(), 'bertgate-deploy-'));
    try {
      const typo = join(dir, 'typo.yaml');
      const text = await readFile(MANIFEST, 'utf8');
      await writeFile(typo, text.replace('terminationGracePeriodSeconds', 'terminationGracePeriodSecond'));
      const bad = kubernetesValidate(typo);
      assert.equal(bad.code, 1, bad.out);
      assert.match(bad.out, /'terminationGracePeriodSecond' was unexpected/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("its ScaledObject is valid for KEDA and scales the worker on the wait list of the worker's queue", async () => {
    const docs = loadAll(await readFile(MANIFEST, 'utf8')) as Manifest[];
    const deployment = docs.find((d) => d.kind === 'Deployment');
    const scaled = docs.find((d) => d.kind === 'ScaledObject');
    assert.ok(deployment && scaled, 'a Deployment and a ScaledObject');
    assert.equal(scaled.apiVersion, 'keda.sh/v1alpha1');
    new ScaledObject(scaled as never).validate();
    // The same check does refuse what KEDA refuses (a list length must be a string).
    const triggers = scaled.spec['triggers'] as Array<{ type: string; metadata: Record<string, unknown> }>;
    const numeric = {
      ...scaled,
      spec: { ...scaled.spec, triggers: [{ ...triggers[0], metadata: { listLength: 20 } }] },
    };
    assert.throws(() => new ScaledObject(numeric as never).validate(), /listLength must be string/);

    assert.deepEqual(scaled.spec['scaleTargetRef'], { name: deployment.metadata.name });
    const container = (
      (deployment.spec['template'] as { spec: { containers: Array<{ args: string[] }> } }).spec.containers[0] as {
        args: string[];
      }
    ).args;
    const queue = container.find((a) => a.startsWith('--queue='))?.slice('--queue='.length);
    assert.equal(triggers.length, 1);
    assert.equal(triggers[0]?.type, 'redis');
    assert.equal(triggers[0]?.metadata['listName'], `bull:${queue}:wait`);
    const redis = container.find((a) => a.startsWith('--redis='))?.slice('--redis='.length);
    assert.equal(`redis://${String(triggers[0]?.metadata['address'])}`, redis);
  });
});
