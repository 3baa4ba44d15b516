// Token alignment as in the official TIME code, checked against hand-computed maps, with a small word-level
// fake tokenizer and (where ../shared is present) the real CLIP tokenizer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { alignTokens, AlignmentError } from '../lib/edit/align.js';
import { augmentPair, augmentPrompt, lowerLeadingA } from '../lib/edit/augment.js';
import { ClipTokenizer } from '../lib/model/tokenizer.js';

// Word-level fake: id = position in the vocabulary + 10; bos 1, eos 2; maxLength configurable.
function fakeTokenizer(maxLength = 77) {
  const vocab = ['a', 'an', 'blue', 'circle', 'apple', 'red', 'dog', 'cat', 'photo', 'of', 'big'];
  return {
    bos: 1,
    eos: 2,
    maxLength,
    tokenize: (text) =>
      text
        .toLowerCase()
        .split(/\s+/)
        .filter(Boolean)
        .map((w) => {
          const i = vocab.indexOf(w);
          if (i < 0) throw new Error(`fake vocab lacks ${w}`);
          return i + 10;
        }),
    tokenString: (id) => (id === 1 ? '<|startoftext|>' : id === 2 ? '<|endoftext|>' : `${vocab[id - 10]}</w>`),
  };
}

// Expected map: the given prefix, then positions counting up from `next`, clamped at 76.
function expected(prefix, next) {
  const m = [...prefix];
  while (m.length < 77) m.push(Math.min(next++, 76));
  return m;
}

test('an inserted word is skipped and the tail shifts by one, clamped at 76', () => {
  const al = alignTokens(fakeTokenizer(), 'a circle', 'a blue circle');
  assert.deepEqual(al.sourceIds, [1, 10, 13, 2]);
  assert.deepEqual(al.destinationIds, [1, 10, 12, 13, 2]);
  // bos→0, a→1, circle→3, eos→4, then source positions 4.. map to 5, 6, …, 76, 76.
  assert.deepEqual([...al.map], expected([0, 1, 3, 4], 5));
  assert.equal(al.map[75], 76);
  assert.equal(al.map[76], 76);
});

test('"an" is read as "a" on both sides', () => {
  const al = alignTokens(fakeTokenizer(), 'An apple', 'a blue apple');
  assert.deepEqual(al.sourceIds, [1, 10, 14, 2]);
  assert.deepEqual([...al.map], expected([0, 1, 3, 4], 5));
});

test('identical prompts give the identity map; several insertions shift further', () => {
  assert.deepEqual([...alignTokens(fakeTokenizer(), 'a red dog', 'a red dog').map], expected([], 0));
  const al = alignTokens(fakeTokenizer(), 'a dog', 'a big red dog');
  assert.deepEqual([...al.map], expected([0, 1, 4, 5], 6));
});

test('a repeated source word matches the next occurrence, not the first', () => {
  const al = alignTokens(fakeTokenizer(), 'a dog a cat', 'a big dog a red cat');
  // dst: bos a big dog a red cat eos → positions 0..7
  assert.deepEqual([...al.map].slice(0, 6), [0, 1, 3, 4, 6, 7]);
});

test('a source word missing from the destination (or out of order) is a clear error naming it', () => {
  assert.throws(
    () => alignTokens(fakeTokenizer(), 'a dog', 'a cat'),
    (e) => e instanceof AlignmentError && /source word 'dog'/.test(e.message),
  );
  // 'red' matches position 3, after which no 'dog' is left.
  assert.throws(() => alignTokens(fakeTokenizer(), 'a red dog', 'a dog red'), /source word 'dog'/);
  assert.throws(() => alignTokens(fakeTokenizer(), '', 'a dog'), /source prompt is empty/);
  assert.throws(() => alignTokens(fakeTokenizer(), 'a dog', '  '), /destination prompt is empty/);
});

test('prompts longer than maxLength − 2 tokens are truncated as SD does, and flagged', () => {
  const tok = fakeTokenizer(6); // room for 4 tokens
  const al = alignTokens(tok, 'a red dog a cat', 'a red dog a cat');
  assert.deepEqual(al.sourceIds, [1, 10, 15, 16, 10, 2]);
  assert.equal(al.truncated.source, true);
  assert.deepEqual([...al.map], [0, 1, 2, 3, 4, 5]);
  // Only the destination is cut: matches are found in the full destination and clamped to the last position.
  const cut = alignTokens(tok, 'a red dog a', 'a big red dog a');
  assert.deepEqual(cut.truncated, { source: false, destination: true });
  assert.deepEqual(cut.destinationIds, [1, 10, 20, 15, 16, 2]);
  assert.deepEqual([...cut.map], [0, 1, 3, 4, 5, 5]);
});

test('augmentations: leading "A" lowered inside templates, configurable list', () => {
  assert.equal(lowerLeadingA('An apple'), 'an apple');
  assert.equal(lowerLeadingA('a circle'), 'a circle');
  assert.equal(lowerLeadingA('Bananas in space'), 'Bananas in space');
  assert.deepEqual(augmentPrompt('A banana'), ['A banana', 'A photo of a banana', 'An image of a banana', 'A picture of a banana']);
  assert.deepEqual(augmentPair('a circle', 'a blue circle', ['A drawing of ']), [
    { source: 'a circle', destination: 'a blue circle' },
    { source: 'A drawing of a circle', destination: 'A drawing of a blue circle' },
  ]);
  assert.deepEqual(augmentPrompt('x', []), ['x']);
});

const clipDir = new URL('../../shared/data/clip-tokenizer', import.meta.url).pathname;
test('real CLIP tokenizer: TIMED pairs align, "An" ↔ "a" included', {
  skip: existsSync(clipDir) ? false : 'no ../shared/data/clip-tokenizer',
}, async () => {
  const tok = await ClipTokenizer.fromFolder(clipDir);
  const al = alignTokens(tok, 'A banana', 'A blue banana');
  assert.deepEqual(al.sourceIds, [49406, 320, 8922, 49407]);
  assert.deepEqual([...al.map], expected([0, 1, 3, 4], 5));
  const an = alignTokens(tok, 'An apple', 'A blue apple');
  assert.equal(an.sourceIds[1], 320);
  assert.deepEqual([...an.map].slice(0, 5), [0, 1, 3, 4, 5]);
  assert.throws(() => alignTokens(tok, 'A bear', 'A polar cat'), /source word 'bear'/);
});
