/**
 * `npm run bench` runs every benchmark below; `npm run bench -- api` only the named ones.
 * A benchmark is a module exporting `run(): Promise<void>` that prints its own table.
 * Add yours to BENCHES (and its section to docs/PERFORMANCE.md).
 */
const BENCHES: Record<string, () => Promise<{ run(): Promise<void> }>> = {
  api: () => import('./api.js'),
  sync: () => import('./sync.js'),
  upload: () => import('./upload.js'),
  run: () => import('./run.js'),
  workspace: () => import('./workspace.js'),
  idle: () => import('./idle.js'),
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((name) => !(name in BENCHES));
if (unknown.length) {
  console.error(`Unknown benchmark ${unknown.join(', ')}; available: ${Object.keys(BENCHES).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  console.log(`\n== bench: ${name} ==`);
  await (await BENCHES[name]()).run();
}
