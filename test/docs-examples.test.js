// The documentation's examples run: every ```js block and every ```sh block of `node lib/cli.js` commands in
// README.md and docs/*.md is executed, so a renamed export, a removed flag or a wrong path in the docs fails here.
// Each document gets a scratch folder (its blocks run in order there and share its out/, so a later block can use
// what an earlier one wrote) holding links to the checkout's lib/, models/ and docs/, and node_modules/time-edit
// linked to the checkout: js blocks import 'time-edit' and 'time-edit/…' through package.json "exports", as a user
// of the installed package would. A block preceded by `<!-- not run: reason -->` is skipped with that reason (GPU-only
// or multi-minute commands, models the repository does not ship); the list must stay short. Relative links in the
// same files must point at files that exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const documents = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
];
/** Skipped blocks over all documents; more than this means the docs drifted away from runnable examples. */
const MAX_NOT_RUN = 8;
/** Per block; the slowest run here (the README's main command, 16 images of 50 steps) takes about 20 s. */
const BLOCK_TIMEOUT_MS = 120_000;
const NOT_RUN = /^<!--\s*not run:\s*(.*?)\s*-->$/;

/**
 * The fenced blocks of a Markdown text: `{ line, lang, code, notRun }`, `line` 1-based at the opening fence,
 * `notRun` the reason of a `<!-- not run: … -->` line right above it (blank lines between are allowed), or null.
 */
function fencedBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  let pendingReason = null;
  for (let i = 0; i < lines.length; i++) {
    const marker = NOT_RUN.exec(lines[i].trim());
    if (marker) {
      pendingReason = marker[1];
      continue;
    }
    const open = /^```\s*([\w+-]*)\s*$/.exec(lines[i]);
    if (!open) {
      if (lines[i].trim() !== '' && pendingReason !== null)
        throw new Error(`line ${i}: a "not run" marker must be followed by a code block`);
      continue;
    }
    const start = i;
    const body = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    if (i >= lines.length) throw new Error(`line ${start + 1}: code block never closed`);
    blocks.push({ line: start + 1, lang: open[1].toLowerCase(), code: `${body.join('\n')}\n`, notRun: pendingReason });
    pendingReason = null;
  }
  return blocks;
}

/** A shell block's commands: comments and blank lines dropped, `\` continuations joined. */
function shellCommands(code) {
  const commands = [];
  let current = '';
  for (const raw of code.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    current += (current === '' ? '' : ' ') + line.replace(/\\$/, '').trim();
    if (!line.endsWith('\\')) {
      commands.push(current);
      current = '';
    }
  }
  if (current !== '') commands.push(current);
  return commands;
}

/**
 * What the test does with a block: 'js' and 'cli' blocks are run; 'other' blocks (C++, synopses in ```text,
 * install and build commands such as `npm install` or `cmake`) are not examples of this package's API or command.
 * A shell block that mixes `node lib/cli.js` with other commands is refused, so every CLI example stays runnable.
 */
function kindOf(block) {
  if (['js', 'javascript', 'mjs'].includes(block.lang)) return 'js';
  if (!['sh', 'bash', 'shell', 'console'].includes(block.lang)) return 'other';
  const commands = shellCommands(block.code);
  const cli = commands.filter((c) => c.startsWith('node lib/cli.js'));
  if (cli.length === 0) return 'other';
  if (cli.length !== commands.length)
    throw new Error(
      `a shell block mixes \`node lib/cli.js\` with other commands: ${commands.filter((c) => !c.startsWith('node lib/cli.js')).join('; ')}`,
    );
  return 'cli';
}

/** A scratch folder that looks like the checkout to the examples, with its own empty out/. */
function scratchFolder(name) {
  const dir = mkdtempSync(join(tmpdir(), `time-edit-docs-${name}-`));
  for (const entry of ['lib', 'models', 'docs']) symlinkSync(join(root, entry), join(dir, entry));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'time-edit'));
  mkdirSync(join(dir, 'out'));
  return dir;
}

function run(command, args, cwd) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: BLOCK_TIMEOUT_MS, env: { ...process.env, TIME_EDIT_DEBUG: '1' } });
  const tail = (s) => (s ?? '').split('\n').slice(-25).join('\n');
  if (r.error) assert.fail(`${r.error.message}\n--- stderr ---\n${tail(r.stderr)}`);
  assert.equal(
    r.status,
    0,
    `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}\n--- stdout ---\n${tail(r.stdout)}\n--- stderr ---\n${tail(r.stderr)}`,
  );
}

const parsed = documents.map((doc) => ({ doc, blocks: fencedBlocks(readFileSync(join(root, doc), 'utf8')) }));

test('docs: the "not run" list is short and every entry says why', () => {
  const skipped = parsed.flatMap(({ doc, blocks }) => blocks.filter((b) => b.notRun !== null).map((b) => ({ doc, ...b })));
  assert.ok(
    skipped.length <= MAX_NOT_RUN,
    `${skipped.length} blocks are marked "not run" (at most ${MAX_NOT_RUN}): ${skipped.map((b) => `${b.doc}:${b.line}`).join(', ')}`,
  );
  for (const b of skipped) assert.ok(b.notRun.length >= 10, `${b.doc}:${b.line}: "not run" needs a reason, got '${b.notRun}'`);
  for (const b of skipped)
    assert.notEqual(kindOf(b), 'other', `${b.doc}:${b.line}: only runnable blocks (js, node lib/cli.js) need a "not run" marker`);
});

test('docs: the block reader finds blocks, languages and markers', () => {
  const text = [
    '# t',
    '```js',
    'a();',
    '```',
    '',
    '<!-- not run: needs a GPU somewhere -->',
    '',
    '```sh',
    'node lib/cli.js x \\',
    '  --y',
    '```',
    '```',
    'plain',
    '```',
  ].join('\n');
  const blocks = fencedBlocks(text);
  assert.deepEqual(
    blocks.map((b) => [b.line, b.lang, b.notRun]),
    [
      [2, 'js', null],
      [8, 'sh', 'needs a GPU somewhere'],
      [12, '', null],
    ],
  );
  assert.deepEqual(shellCommands(blocks[1].code), ['node lib/cli.js x --y']);
  assert.equal(kindOf(blocks[1]), 'cli');
  assert.equal(kindOf({ lang: 'sh', code: 'npm install\n' }), 'other');
  assert.throws(() => kindOf({ lang: 'sh', code: 'node lib/cli.js a\nrm -rf out\n' }), /mixes/);
  assert.throws(() => fencedBlocks('<!-- not run: a reason here -->\ntext\n'), /must be followed by a code block/);
});

/** Markdown text without its fenced blocks (whose `#` lines are shell comments, not headings). */
const prose = (text) => text.replace(/^```[\s\S]*?^```/gm, '');

/** The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces → '-', repeats numbered. */
function headingAnchors(text) {
  const seen = new Map();
  const anchors = new Set();
  for (const [, title] of prose(text).matchAll(/^#{1,6}\s+(.+?)\s*$/gm)) {
    const base = title
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

test('docs: relative links point at files and headings that exist', () => {
  assert.ok(headingAnchors("## `edit --batch`\n## API (`import … from 'time-edit'`)\n## A\n## A").has('edit---batch'));
  assert.deepEqual(
    [...headingAnchors("## API (`import … from 'time-edit'`)\n## A\n## A\n```sh\n# not a heading\n```")],
    ['api-import--from-time-edit', 'a', 'a-1'],
  );
  const problems = [];
  for (const doc of documents) {
    for (const [, target] of prose(readFileSync(join(root, doc), 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target)) continue;
      const [file, anchor] = target.split('#');
      const path = file === '' ? join(root, doc) : resolve(root, dirname(doc), decodeURIComponent(file));
      if (!existsSync(path)) problems.push(`${doc}: link to ${target}: ${relative(root, path)} does not exist`);
      else if (anchor !== undefined && path.endsWith('.md') && !headingAnchors(readFileSync(path, 'utf8')).has(anchor))
        problems.push(`${doc}: link to ${target}: no heading with anchor #${anchor} in ${relative(root, path)}`);
    }
  }
  assert.deepEqual(problems, []);
});

for (const { doc, blocks } of parsed) {
  const runnable = blocks.map((b) => ({ ...b, kind: kindOf(b) })).filter((b) => b.kind !== 'other');
  if (runnable.length === 0) continue;
  test(`docs: examples of ${doc}`, async (t) => {
    const dir = scratchFolder(basename(doc, '.md'));
    try {
      for (const block of runnable) {
        const name = `${doc}:${block.line} (${block.kind === 'js' ? 'js' : shellCommands(block.code)[0].slice(0, 70)})`;
        await t.test(name, { skip: block.notRun ?? false }, () => {
          if (block.kind === 'js') {
            assert.doesNotMatch(block.code, /from\s+['"]\.{1,2}\//, 'examples import from time-edit, not by relative path');
            const file = join(dir, `example-${block.line}.mjs`);
            writeFileSync(file, block.code);
            run(process.execPath, [file], dir);
          } else {
            run('bash', ['-euo', 'pipefail', '-c', shellCommands(block.code).join('\n')], dir);
          }
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
