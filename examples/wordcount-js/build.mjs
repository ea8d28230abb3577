// Componentize wordcount.js against the plugin world: node build.mjs <out.wasm>.
// `http` and `fetch-event` are left out: the host links WASI p2 but not wasi:http,
// and a job has no network anyway.
import { componentize } from '@bytecodealliance/componentize-js';
import { rename, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs <out.wasm>');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: join(here, 'wordcount.js'),
  witPath: join(here, '..', '..', 'wit'),
  worldName: 'plugin',
  disableFeatures: ['http', 'fetch-event'],
});
// Publish atomically: a host watching the directory never sees half a file.
const tmp = join(dirname(out), `.${basename(out)}.tmp`);
await writeFile(tmp, component);
await rename(tmp, out);
