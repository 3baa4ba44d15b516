// ClipTokenizer against an independent CLIP BPE written here from the published algorithm (OpenAI CLIP
// simple_tokenizer: lowercase + whitespace clean, the CLIP split regex, GPT-2 bytes_to_unicode, BPE by merge rank
// with "</w>" on the last symbol), on every prompt of the TIMED CSVs, plus SD padding and truncation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClipTokenizer } from '../lib/model/tokenizer.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const shared = join(root, '..', 'shared', 'data');
const tokDir = join(shared, 'clip-tokenizer');
const timedDir = join(shared, 'TIMED');
const haveShared = existsSync(join(tokDir, 'vocab.json')) && existsSync(timedDir);
const skip = haveShared ? false : `../shared/data (clip-tokenizer, TIMED) is absent: ${shared}`;

function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const map = new Map();
  bs.forEach((b, i) => map.set(b, String.fromCodePoint(cs[i])));
  return map;
}

function referenceTokenizer(dir) {
  const encoder = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8'));
  const lines = readFileSync(join(dir, 'merges.txt'), 'utf8').split('\n');
  // simple_tokenizer.py: merges[1 : 49152-256-2+1]
  const merges = lines.slice(1, 49152 - 256 - 2 + 1).map((l) => l.split(' '));
  const ranks = new Map(merges.map((m, i) => [m.join(' '), i]));
  const byteEncoder = bytesToUnicode();
  const pat = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;
  const bpe = (token) => {
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    for (;;) {
      let best = null;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = [word[i], word[i + 1]];
        }
      }
      if (best === null) break;
      const next = [];
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === best[0] && word[i + 1] === best[1]) {
          next.push(best[0] + best[1]);
          i += 2;
        } else {
          next.push(word[i]);
          i += 1;
        }
      }
      word = next;
      if (word.length === 1) break;
    }
    return word;
  };
  return (text) => {
    const clean = text.replace(/\s+/g, ' ').trim().toLowerCase();
    const ids = [];
    for (const m of clean.matchAll(pat)) {
      const piece = Array.from(Buffer.from(m[0], 'utf8'), (b) => byteEncoder.get(b)).join('');
      for (const t of bpe(piece)) {
        const id = encoder[t];
        assert.notEqual(id, undefined, `reference: ${t} not in vocab`);
        ids.push(id);
      }
    }
    return ids;
  };
}

// RFC 4180 CSV: quoted fields may contain commas and doubled quotes.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

test('tokenize matches the reference CLIP BPE on every TIMED prompt', { skip }, async () => {
  const tok = await ClipTokenizer.fromFolder(tokDir);
  const ref = referenceTokenizer(tokDir);
  const prompts = new Set();
  for (const f of readdirSync(timedDir).filter((n) => n.endsWith('.csv'))) {
    const rows = parseCsv(readFileSync(join(timedDir, f), 'utf8'));
    for (const row of rows.slice(1)) for (const cell of row) if (cell.trim() !== '') prompts.add(cell);
  }
  assert.ok(prompts.size > 1000, `expected many TIMED prompts, got ${prompts.size}`);
  let mismatches = 0;
  for (const p of prompts) {
    const got = tok.tokenize(p);
    const want = ref(p);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      mismatches++;
      assert.deepEqual(got, want, `prompt ${JSON.stringify(p)}`);
    }
    const enc = tok.encode(p);
    const padded = [49406, ...want.slice(0, 75), 49407];
    while (padded.length < 77) padded.push(49407);
    assert.deepEqual(Array.from(enc.ids), padded, `encode ${JSON.stringify(p)}`);
  }
  assert.equal(mismatches, 0);
});

test('hand-checked ids, special tokens and token strings', { skip }, async () => {
  const tok = await ClipTokenizer.fromFolder(tokDir);
  assert.equal(tok.bos, 49406);
  assert.equal(tok.eos, 49407);
  assert.equal(tok.maxLength, 77);
  // The diffusers docs' example: "a photo of a cat" -> 49406 320 1125 539 320 2368 49407.
  assert.deepEqual(tok.tokenize('a photo of a cat'), [320, 1125, 539, 320, 2368]);
  assert.deepEqual(tok.tokenize('  A   PHOTO\tof a\ncat  '), [320, 1125, 539, 320, 2368]);
  assert.equal(tok.tokenString(320), 'a</w>');
  assert.equal(tok.tokenString(2368), 'cat</w>');
  assert.equal(tok.tokenString(49407), '<|endoftext|>');
  assert.throws(() => tok.tokenString(10 ** 6), RangeError);
  // Digits are single tokens.
  assert.deepEqual(
    tok.tokenize('12').map((i) => tok.tokenString(i)),
    ['1</w>', '2</w>'],
  );
  assert.deepEqual(tok.tokenize(''), []);
  const empty = tok.encode('');
  assert.deepEqual(Array.from(empty.ids), [49406, ...new Array(76).fill(49407)]);
  assert.equal(empty.truncated, false);
});

test('padding and truncation at 77', { skip }, async () => {
  const tok = await ClipTokenizer.fromFolder(tokDir);
  const words = (n) => new Array(n).fill('cat').join(' ');
  const exact = tok.encode(words(75));
  assert.equal(exact.truncated, false);
  assert.equal(exact.ids.length, 77);
  assert.deepEqual(Array.from(exact.ids), [49406, ...new Array(75).fill(2368), 49407]);
  const over = tok.encode(words(76));
  assert.equal(over.truncated, true);
  assert.deepEqual(Array.from(over.ids), [49406, ...new Array(75).fill(2368), 49407]);
  const long = tok.encode(`a photo of ${words(100)} dog`);
  assert.equal(long.truncated, true);
  assert.equal(long.ids[76], 49407);
  assert.deepEqual(Array.from(long.ids.slice(0, 4)), [49406, 320, 1125, 539]);
  assert.equal(tok.tokenize(words(100)).length, 100, 'tokenize does not truncate');
});

test('a tokenizer.json folder (fast-tokenizer layout) gives the same ids as vocab.json + merges.txt', async () => {
  const src = join(root, 'test', 'fixtures', 'tiny-sd', 'tokenizer');
  const vocab = JSON.parse(readFileSync(join(src, 'vocab.json'), 'utf8'));
  const merges = readFileSync(join(src, 'merges.txt'), 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l !== '');
  // transformers' CLIPConverter layout, with the post-processor that adds bos/eos (tokenize() must not).
  const json = {
    version: '1.0',
    added_tokens: ['<|startoftext|>', '<|endoftext|>'].map((content) => ({
      id: vocab[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: true,
      special: true,
    })),
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" },
          behavior: 'Removed',
          invert: true,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: ['<|endoftext|>', vocab['<|endoftext|>']],
      cls: ['<|startoftext|>', vocab['<|startoftext|>']],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<|endoftext|>',
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const dir = mkdtempSync(join(tmpdir(), 'tokjson-'));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  const fromJson = await ClipTokenizer.fromFolder(dir);
  const fromFiles = await ClipTokenizer.fromFolder(src);
  assert.equal(fromJson.bos, fromFiles.bos);
  assert.equal(fromJson.eos, fromFiles.eos);
  for (const p of ['a red circle', 'A Photo of the BIG blue  square!', 'zebra 42', '']) {
    assert.deepEqual(fromJson.tokenize(p), fromFiles.tokenize(p), p);
    assert.deepEqual(fromJson.encode(p), fromFiles.encode(p), p);
  }
  assert.deepEqual(
    fromFiles.tokenize('a red circle').map((i) => fromFiles.tokenString(i)),
    ['a</w>', 'red</w>', 'circle</w>'],
  );
});

test('bad tokenizer folders give clear errors', async () => {
  await assert.rejects(ClipTokenizer.fromFolder(join(root, 'no-such-folder')), /does not exist/);
  await assert.rejects(ClipTokenizer.fromFolder(join(root, 'test')), /neither vocab\.json \+ merges\.txt nor tokenizer\.json/);
});
