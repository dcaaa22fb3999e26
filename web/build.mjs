// Copies the map library from node_modules into dist/, where cargo build finds it and
// embeds it in the binary (build.rs). Run after `npm ci`: `npm run build --prefix web`.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const from = join(here, 'node_modules', 'leaflet', 'dist');
const to = join(here, 'dist');
mkdirSync(to, { recursive: true });
for (const file of ['leaflet.js', 'leaflet.css']) {
  copyFileSync(join(from, file), join(to, file));
  console.log(`web/dist/${file}`);
}
