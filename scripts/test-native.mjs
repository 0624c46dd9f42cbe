// Runs the engine's GoogleTest suite (built by build-native.mjs --tests).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { BUILD_DIR } from './paths.mjs';
import { run } from './run.mjs';

const binary = join(BUILD_DIR, 'engine_tests');
if (!existsSync(binary)) throw new Error(`${binary} is missing: run npm run build:native`);
run(binary, ['--gtest_brief=1']);
