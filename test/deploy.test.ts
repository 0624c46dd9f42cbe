// deploy/: the Kubernetes manifests and the container recipe, checked offline against real
// schemas and against the real thing.
// - Schemas: the Kubernetes objects against Kubernetes 1.30's with kubernetes-validate --strict (a
//   misspelled field is an error; preStop.sleep needs 1.30), KEDA's ScaledObjects against the
//   schema @kubernetes-models/keda compiles from KEDA's CRD.
// - Agreement: KEDA scales the Deployment it names; the worker's on the wait list of its queue,
//   serve's on a metric a live `serve` exports; serve's container arguments parse as serve flags;
//   each probe path answers a live `serve` started with those arguments as the probe expects; the
//   grace period covers preStop and the drain.
// - The container: deploy/container/install.sh, the Dockerfile's one install step, runs for real in
//   a fresh directory on the packed checkout (no base image can be pulled here, so the image
//   itself is not built), and the Dockerfile's entry point and environment name what it installed.

import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { loadAll } from 'js-yaml';

import { parseServeArgs } from '../lib/cli/serve.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { CLI, bertgate, bundle } from './helpers.js';

const exec = promisify(execFile);
const KUBERNETES_DIR = join(PACKAGE_ROOT, 'deploy', 'kubernetes');
const CONTAINER_DIR = join(PACKAGE_ROOT, 'deploy', 'container');
const VALIDATE = join(PACKAGE_ROOT, '.venv', 'bin', 'kubernetes-validate');
const KUBERNETES = '1.30.0';
/** Seconds the grace period keeps beyond preStop and the drain: the exit itself, a slow node. */
const GRACE_MARGIN = 5;

function kubernetesValidate(file: string): { code: number | null; out: string } {
  const r = spawnSync(VALIDATE, ['--strict', '-k', KUBERNETES, file], { encoding: 'utf8' });
  if (r.error) throw r.error; // not installed: set-up puts it in .venv (requirements.txt)
  return { code: r.status, out: r.stdout + r.stderr };
}

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Record<string, unknown>;
}
interface Probe {
  httpGet: { path: string; port: string | number };
  periodSeconds: number;
  failureThreshold: number;
}
interface Container {
  args: string[];
  ports: Array<{ name: string; containerPort: number }>;
  resources: { limits?: Record<string, string | number>; requests?: Record<string, string | number> };
  startupProbe: Probe;
  readinessProbe: Probe;
  livenessProbe: Probe;
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
}
interface PodTemplate {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
  spec: { terminationGracePeriodSeconds: number; containers: Container[] };
}
interface Trigger {
  type: string;
  metadata: Record<string, string>;
}

async function manifests(file: string): Promise<Manifest[]> {
  return loadAll(await readFile(join(KUBERNETES_DIR, file), 'utf8')) as Manifest[];
}

function only(docs: Manifest[], kind: string): Manifest {
  const found = docs.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0] as Manifest;
}

function template(deployment: Manifest): PodTemplate {
  return deployment.spec['template'] as PodTemplate;
}

/** The value of `--name=value` in args. */
function flag(args: string[], name: string): string | undefined {
  return args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

const MANIFESTS = ['worker.yaml', 'serve.yaml', 'serve-cpu.yaml'];

describe('deploy/kubernetes', () => {
  for (const file of MANIFESTS) {
    it(`${file} validates strictly against Kubernetes ${KUBERNETES}, every object of it`, async () => {
      const r = kubernetesValidate(join(KUBERNETES_DIR, file));
      assert.equal(r.code, 0, r.out);
      for (const doc of await manifests(file)) {
        if (doc.apiVersion.startsWith('keda.sh/')) continue; // KEDA's own schema, below
        const resource = `${doc.kind.toLowerCase()}/${doc.metadata.name}`;
        assert.match(r.out, new RegExp(`passed for resource ${resource} against version 1\\.30`), r.out);
      }
    });

    it(`${file}: its ScaledObject is valid for KEDA and scales the Deployment beside it`, async () => {
      const docs = await manifests(file);
      const scaled = only(docs, 'ScaledObject');
      assert.equal(scaled.apiVersion, 'keda.sh/v1alpha1');
      new ScaledObject(scaled as never).validate();
      assert.deepEqual(scaled.spec['scaleTargetRef'], { name: only(docs, 'Deployment').metadata.name });
    });
  }

  it('a misspelled Kubernetes field or a mistyped KEDA value would be caught', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bertgate-deploy-'));
    try {
      const typo = join(dir, 'typo.yaml');
      const text = await readFile(join(KUBERNETES_DIR, 'serve.yaml'), 'utf8');
      await writeFile(typo, text.replace('terminationGracePeriodSeconds', 'terminationGracePeriodSecond'));
      const bad = kubernetesValidate(typo);
      assert.equal(bad.code, 1, bad.out);
      assert.match(bad.out, /'terminationGracePeriodSecond' was unexpected/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    // KEDA's: a threshold must be a string, a replica count a number. (Its compiled schema lets an
    // unknown field through, so the fields these manifests rely on are checked by name below.)
    const scaled = only(await manifests('serve.yaml'), 'ScaledObject');
    const [trigger] = scaled.spec['triggers'] as Trigger[];
    const numeric = { ...scaled, spec: { ...scaled.spec, triggers: [{ ...trigger, metadata: { threshold: 512 } }] } };
    assert.throws(() => new ScaledObject(numeric as never).validate(), /threshold must be string/);
    const text = { ...scaled, spec: { ...scaled.spec, minReplicaCount: '1' } };
    assert.throws(() => new ScaledObject(text as never).validate(), /minReplicaCount must be integer/);
  });

  it("worker.yaml scales the worker on the wait list of the worker's queue", async () => {
    const docs = await manifests('worker.yaml');
    const [trigger, ...rest] = only(docs, 'ScaledObject').spec['triggers'] as Trigger[];
    assert.equal(rest.length, 0);
    const args = template(only(docs, 'Deployment')).spec.containers[0]?.args ?? [];
    assert.equal(trigger?.type, 'redis');
    assert.equal(trigger.metadata['listName'], `bull:${flag(args, 'queue')}:wait`);
    assert.equal(`redis://${trigger.metadata['address']}`, flag(args, 'redis'));
  });
});

/** A `serve` started with a manifest's arguments, but a test bundle, a free port and this host. */
async function liveServe(args: string[]): Promise<{ url: string; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) resolve(match[1] as string);
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${output}`)));
  });
  return {
    url,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}

/** What a kubelet's httpGet probe counts as success. */
async function probe(url: string, p: Probe): Promise<number> {
  return (await fetch(`${url}${p.httpGet.path}`)).status;
}

const SERVE = [
  // The GPU manifest's --device=cuda:* runs on this machine's CPU; the rest of its flags as written.
  { file: 'serve.yaml', gpu: true, model: bundle('labels50'), replicas: 1 },
  { file: 'serve-cpu.yaml', gpu: false, model: bundle('labels50-int8'), replicas: 2 },
];

describe('deploy/kubernetes agrees with a live serve', () => {
  for (const { file, gpu, model, replicas } of SERVE) {
    it(`${file}: the container's arguments are serve flags, its ports, probes and grace period fit them`, async () => {
      const docs = await manifests(file);
      const pod = template(only(docs, 'Deployment'));
      assert.equal(pod.spec.containers.length, 1);
      const container = pod.spec.containers[0] as Container;
      assert.equal(container.args[0], 'serve');
      const parsed = parseServeArgs(container.args.slice(1));
      assert.equal(parsed.host, '0.0.0.0', 'a pod must listen beyond its loopback');
      const http = container.ports.find((p) => p.name === 'http');
      assert.equal(http?.containerPort, parsed.port);
      assert.equal(pod.metadata.annotations?.['prometheus.io/port'], String(parsed.port));
      assert.equal(pod.metadata.annotations?.['prometheus.io/path'], '/metrics');
      for (const p of [container.startupProbe, container.readinessProbe, container.livenessProbe])
        assert.equal(p.httpGet.port, 'http');
      assert.equal(container.startupProbe.httpGet.path, '/readyz');
      assert.equal(container.readinessProbe.httpGet.path, '/readyz');
      assert.equal(container.livenessProbe.httpGet.path, '/healthz');

      const preStop = container.lifecycle?.preStop?.sleep?.seconds ?? 0;
      assert.ok(preStop >= 1, 'a preStop sleep, so the Service forgets the pod before its drain');
      const grace = pod.spec.terminationGracePeriodSeconds;
      const drain = parsed.drainTimeoutMs / 1000;
      assert.ok(
        grace >= preStop + drain + GRACE_MARGIN,
        `grace ${grace} s < preStop ${preStop} + drain ${drain} + margin`,
      );

      if (gpu) {
        assert.deepEqual(parsed.options.device, 'cuda:*');
        assert.equal(container.resources.limits?.['nvidia.com/gpu'], 1);
      } else {
        assert.equal(parsed.options.device, 'cpu');
        assert.equal(container.resources.limits?.['nvidia.com/gpu'], undefined);
        const cores = Number(container.resources.limits?.['cpu']);
        const threads = (parsed.options.replicas ?? 1) * (parsed.options.threads ?? cores);
        assert.ok(threads < cores, `${threads} replica threads leave the event loop no core of ${cores}`);
      }

      // The Service and the budget select these pods, through the port serve listens on.
      const labels = pod.metadata.labels;
      const service = only(docs, 'Service').spec as {
        selector: Record<string, string>;
        ports: Array<{ targetPort: string }>;
      };
      assert.deepEqual(service.selector, labels);
      assert.equal(service.ports[0]?.targetPort, 'http');
      const budget = only(docs, 'PodDisruptionBudget').spec as { selector: { matchLabels: Record<string, string> } };
      assert.deepEqual(budget.selector.matchLabels, labels);
    });

    it(`${file}: KEDA's query reads a metric serve exports, its threshold below the queue's bound`, async () => {
      const docs = await manifests(file);
      const pod = template(only(docs, 'Deployment'));
      const args = (pod.spec.containers[0] as Container).args;
      const [trigger, ...rest] = only(docs, 'ScaledObject').spec['triggers'] as Trigger[];
      assert.equal(rest.length, 0);
      assert.equal(trigger?.type, 'prometheus');
      const query = trigger.metadata['query'] as string;
      // One value for KEDA: a sum over the pods, selected by the label the scrape copies from them.
      assert.match(query, /^sum\(/);
      assert.match(query, new RegExp(`app="${pod.metadata.labels['app']}"`));
      const names = query.match(/\bbertgate_[a-z_]+\b/g) ?? [];
      assert.ok(names.length > 0, query);
      const threshold = Number(trigger.metadata['threshold']);
      const maxQueue = parseServeArgs(args.slice(1)).options.maxQueue ?? 10_000;
      assert.ok(threshold > 0 && threshold < maxQueue / 4, `threshold ${threshold}, --max-queue ${maxQueue}`);
      assert.equal(only(docs, 'ScaledObject').spec['minReplicaCount'], 1, 'a cold start is a model load');

      const live = args.map((a) => (a.startsWith('--model=') ? `--model=${model}` : a));
      const server = await liveServe([
        ...live.filter((a) => !/^--(port|host|device)=/.test(a)),
        '--port=0',
        '--host=127.0.0.1',
        '--device=cpu',
      ]);
      try {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        for (const name of names) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} in /metrics`);
      } finally {
        assert.equal(await server.stop(), 0);
      }
    });

    it(`${file}: each probe answers a live serve as the manifest expects, through the drain`, async () => {
      const docs = await manifests(file);
      const container = template(only(docs, 'Deployment')).spec.containers[0] as Container;
      const args = container.args.map((a) => (a.startsWith('--model=') ? `--model=${model}` : a));
      const server = await liveServe([
        ...args.filter((a) => !/^--(port|host|device)=/.test(a)),
        '--port=0',
        '--host=127.0.0.1',
        '--device=cpu',
      ]);
      let stopped: Promise<number | null> | undefined;
      try {
        // The port opens once the model is loaded: the startup probe's first success is a ready pod.
        assert.equal(await probe(server.url, container.startupProbe), 200);
        const ready = await fetch(`${server.url}${container.readinessProbe.httpGet.path}`);
        assert.equal(ready.status, 200);
        assert.deepEqual(((await ready.json()) as { replicas: unknown }).replicas, {
          healthy: replicas,
          total: replicas,
        });
        assert.equal(await probe(server.url, container.livenessProbe), 200);
        // SIGTERM (after preStop) with a request in flight: the readiness probe fails from then on
        // (503 while the drain runs, refused once the port closes), the request is answered, and
        // serve exits 0.
        const texts = Array.from(
          { length: 1000 },
          (_, i) => `package ${i}: ${'a library for parsing XML '.repeat(20)}`,
        );
        const inFlight = fetch(`${server.url}/classify`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ texts }),
        });
        await new Promise((r) => setTimeout(r, 100));
        stopped = server.stop();
        let after: number | string = 200;
        for (let i = 0; i < 500 && after === 200; i++) {
          after = await fetch(`${server.url}${container.readinessProbe.httpGet.path}`).then(
            (r) => r.status,
            () => 'refused',
          );
          if (after === 200) await new Promise((r) => setTimeout(r, 10));
        }
        assert.ok(after === 503 || after === 'refused', `readiness while stopping: ${after}`);
        assert.equal((await inFlight).status, 200);
        assert.equal(await stopped, 0);
      } finally {
        await (stopped ?? server.stop());
      }
    });
  }
});

interface TorchWheels {
  MATRIX: string[];
  torchWheels(version: string): string[];
}

describe('deploy/container', () => {
  let root: string;
  let app: string;
  let env: NodeJS.ProcessEnv;
  let dockerfile: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'bertgate-container-'));
    dockerfile = await readFile(join(CONTAINER_DIR, 'Dockerfile'), 'utf8');
    // --ignore-scripts: prepack would recompile dist/ while other test files import it.
    const npmCli = process.env['npm_execpath'];
    const { stdout } = await exec(
      process.execPath,
      [
        ...(npmCli?.endsWith('.js') ? [npmCli] : ['/usr/bin/npm']),
        'pack',
        '--json',
        '--ignore-scripts',
        '--pack-destination',
        root,
      ],
      { cwd: PACKAGE_ROOT, maxBuffer: 64 << 20 },
    );
    const [packed] = JSON.parse(stdout) as Array<{ filename: string }>;
    assert.ok(packed);
    // The image's PATH: node and npm (the node image), python3 (apt), the shell's tools.
    const bin = join(root, 'bin');
    await mkdir(bin);
    const home = /^home = (.+)$/m.exec(readFileSync(join(PACKAGE_ROOT, '.venv', 'pyvenv.cfg'), 'utf8'))?.[1];
    assert.ok(home && existsSync(join(home, 'python3')), 'the base python of .venv');
    await symlink(join(home, 'python3'), join(bin, 'python3'));
    const wheels = (await import(pathToFileURL(join(PACKAGE_ROOT, 'scripts', 'torch-wheels.mjs')).href)) as TorchWheels;
    const torch = /ARG TORCH=torch==(\S+)/.exec(dockerfile)?.[1];
    assert.ok(torch && wheels.MATRIX.includes(torch), `the Dockerfile's torch ${torch} has a prebuilt engine`);
    env = {
      HOME: process.env['HOME'],
      PATH: `${bin}:${join(process.execPath, '..')}:/usr/bin:/bin`,
      // The torch the Dockerfile names, from the wheels set-up cached, without its CUDA wheels
      // (several GB) but with the two runtime libraries its CPU half loads.
      TORCH: wheels.torchWheels(torch).join(' '),
      TORCH_PIP_FLAGS: '--no-deps',
    };
    if (process.env['TMPDIR']) env['TMPDIR'] = process.env['TMPDIR'];
    app = join(root, 'app');
    await exec('sh', [join(CONTAINER_DIR, 'install.sh'), app, join(root, packed.filename)], {
      env,
      maxBuffer: 64 << 20,
    }).catch((error: { stdout?: string; stderr?: string }) => {
      throw new Error(`install.sh failed: ${error.stdout ?? ''}${error.stderr ?? ''}`);
    });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it("installs an engine that loads, and the image's entry point runs the default model", async () => {
    const entry = /^ENTRYPOINT \["node", "\/app\/([^"]+)"\]$/m.exec(dockerfile)?.[1];
    const python = /^ENV BERTGATE_PYTHON=\/app\/(\S+)$/m.exec(dockerfile)?.[1];
    assert.ok(entry && python, 'an ENTRYPOINT and BERTGATE_PYTHON under /app, where install.sh put them');
    assert.match(dockerfile, /^RUN TORCH="\$TORCH" sh \/tmp\/install\.sh \/app "\$PACKAGE"/m);
    const text = 'Python bindings for the libxml2 XML parsing library.';
    const installed = await exec(process.execPath, [join(app, entry), 'classify', text], {
      env: { ...env, BERTGATE_PYTHON: join(app, python) },
    });
    // The same decision as this checkout gives: the same default model on the same torch.
    const checkout = await bertgate(['classify', text]);
    assert.equal(checkout.code, 0, checkout.stderr);
    const [a, b] = [installed.stdout, checkout.stdout].map(
      (o) => JSON.parse(o) as { label: string; probability: number },
    );
    assert.equal(a?.label, b?.label);
    assert.ok(Math.abs((a?.probability ?? 0) - (b?.probability ?? 1)) < 1e-6, `${a?.probability} vs ${b?.probability}`);
  });

  it("the image's default command is a valid serve that listens beyond the pod", () => {
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    assert.ok(cmd);
    const [command, ...args] = JSON.parse(cmd) as string[];
    assert.equal(command, 'serve');
    const parsed = parseServeArgs(args);
    assert.equal(parsed.host, '0.0.0.0');
    assert.match(dockerfile, new RegExp(`^EXPOSE ${parsed.port}$`, 'm'));
  });
});
