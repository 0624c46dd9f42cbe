// Which native module is loaded as bertgate's addon, and what happens when it is not one.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';

const exec = promisify(execFile);
const INDEX = pathToFileURL(join(PACKAGE_ROOT, 'dist', 'lib', 'index.js')).href;

describe('the addon', () => {
  it("BERTGATE_ADDON naming another package's N-API module: ERR_ADDON_LOAD, and the process exits cleanly", async () => {
    const other = join(PACKAGE_ROOT, 'node_modules', 'tokenizers', 'tokenizers.linux-x64-gnu.node');
    const code = [
      `import { Classifier } from ${JSON.stringify(INDEX)};`,
      `const model = ${JSON.stringify(join(PACKAGE_ROOT, 'models', 'default'))};`,
      'const e = await Classifier.load(model).then(() => ({}), (e) => e);',
      'console.log(JSON.stringify({ code: e.code, message: e.message }));',
    ].join('\n');
    // Before the addon's shape was checked, the exit hook called quiesce() on the other module
    // and the process died with an uncaught TypeError after printing.
    const { stdout, stderr } = await exec(process.execPath, ['--input-type=module', '-e', code], {
      env: { PATH: process.env['PATH'], BERTGATE_ADDON: other },
    });
    assert.equal(stderr, '');
    assert.deepEqual(JSON.parse(stdout), {
      code: 'ERR_ADDON_LOAD',
      message:
        `${other} (named by BERTGATE_ADDON) is a native module, but not bertgate's addon: ` +
        'it has no openRuntime, quiesce, buildInfo, EngineHandle',
    });
  });
});
