// Builds console/dist: exactly index.html, app.js and app.css, minified.
// The crmsearch binary embeds that folder at compile time.
import { build } from 'esbuild';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const tmp = join(root, 'dist.tmp');

await rm(tmp, { recursive: true, force: true });
await mkdir(tmp, { recursive: true });

const common = { bundle: true, minify: true, legalComments: 'none', logLevel: 'warning', sourcemap: false, write: true };
await build({ ...common, entryPoints: [join(root, 'src/app.js')], outfile: join(tmp, 'app.js'), format: 'iife', target: ['es2020'], platform: 'browser' });
await build({ ...common, entryPoints: [join(root, 'src/app.css')], outfile: join(tmp, 'app.css') });

const html = (await readFile(join(root, 'src/index.html'), 'utf8'))
  .replace(/\s+/g, ' ')
  .trim();
await writeFile(join(tmp, 'index.html'), html + '\n');

const made = (await readdir(tmp)).sort();
if (made.join(',') !== 'app.css,app.js,index.html') throw new Error(`console build: unexpected files ${made}`);
await rm(dist, { recursive: true, force: true });
await rename(tmp, dist);
console.log('console: built dist/index.html, dist/app.js, dist/app.css');
