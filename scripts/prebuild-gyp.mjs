#!/usr/bin/env node
// prebuildify's "node-gyp" for a cmake-js project (prebuildify has no cmake-js backend). It is
// called as `<this> rebuild --target=<node> --devdir=... --arch=x64 --release` in its --cwd,
// the staging directory; an N-API build needs none of those arguments. It builds the addon
// alone (it needs no libtorch; scripts/prebuilds.mjs builds the engines) into
// <cwd>/build/Release, where prebuildify takes bertgate.node. Incremental: cmake decides what
// is stale.
import { join } from 'node:path';

import { buildNative } from './build-native.mjs';

await buildNative({ out: join(process.cwd(), 'build'), parts: 'addon' });
