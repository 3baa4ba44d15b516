// The layer rule of docs/architecture.md, checked by dependency-cruiser in `npm test` (scripts/lint.js):
// cli → queue → eval → edit → sample, solver, checkpoint → model, image → fs → errors.ts. A module may import its own layer and the ones
// below it; nothing points up, and there are no cycles. See https://github.com/sverweij/dependency-cruiser.
/** Each layer with the folders it must never import (everything above it). */
const layers = [
  { name: 'queue', path: '^lib/queue/', above: ['cli'] },
  { name: 'eval', path: '^lib/eval/', above: ['cli', 'queue'] },
  { name: 'edit', path: '^lib/edit/', above: ['cli', 'queue', 'eval'] },
  { name: 'sample', path: '^lib/sample/', above: ['cli', 'queue', 'eval', 'edit', 'solver', 'checkpoint'] },
  { name: 'solver', path: '^lib/solver/', above: ['cli', 'queue', 'eval', 'edit', 'sample', 'checkpoint'] },
  { name: 'checkpoint', path: '^lib/checkpoint/', above: ['cli', 'queue', 'eval', 'edit', 'sample', 'solver'] },
  { name: 'model', path: '^lib/model/', above: ['cli', 'queue', 'eval', 'edit', 'sample', 'solver', 'checkpoint'] },
  { name: 'image', path: '^lib/image/', above: ['cli', 'queue', 'eval', 'edit', 'sample', 'solver', 'checkpoint', 'model'] },
];
const folder = (names) => `^lib/(${names.join('|')})/`;

module.exports = {
  forbidden: [
    ...layers.map((l) => ({
      name: `${l.name}-not-above`,
      comment: `lib/${l.name}/ sits below ${l.above.join(', ')} (docs/architecture.md): it must not import them`,
      severity: 'error',
      from: { path: l.path },
      to: { path: folder(l.above) },
    })),
    {
      name: 'errors-is-the-bottom',
      comment: 'lib/errors.ts is the shared error vocabulary: it imports nothing from lib/',
      severity: 'error',
      from: { path: '^lib/errors\\.ts$' },
      to: { path: '^lib/' },
    },
    {
      name: 'fs-imports-only-errors',
      comment: 'lib/fs/ is the bottom layer: besides itself it may import only lib/errors.ts',
      severity: 'error',
      from: { path: '^lib/fs/' },
      to: { path: '^lib/', pathNot: '^lib/(fs/|errors\\.ts$)' },
    },
    {
      name: 'library-not-cli',
      comment: 'only lib/cli/ and the entry lib/cli.ts may import lib/cli/ (the library knows no flags or exit codes)',
      severity: 'error',
      from: { path: '^lib/', pathNot: '^lib/(cli/|cli\\.ts$)' },
      to: { path: '^lib/cli/' },
    },
    {
      name: 'index-is-not-imported',
      comment: 'lib/index.ts is the public API for users; modules inside lib/ import the module that defines a thing',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^lib/index\\.ts$' },
    },
    {
      name: 'no-cycles',
      comment: 'no import cycles, type-only imports included',
      severity: 'error',
      from: { path: '^lib/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.d\\.ts$|\\.js$' },
    includeOnly: '^lib/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
