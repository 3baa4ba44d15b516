// A tiny stand-in for ClipTokenizer (same shape: bos, eos, maxLength, tokenize, tokenString) over a fixed word
// list, so the edit tests can hand-compute token ids: word i of the list has id i + 10.
export const fakeVocab = ['a', 'an', 'blue', 'circle', 'photo', 'of', 'image', 'picture', 'square', 'orange'];

export const fakeTokenizer = {
  bos: 1,
  eos: 2,
  maxLength: 77,
  tokenize: (t) =>
    t
      .toLowerCase()
      .split(/\s+/)
      .filter(Boolean)
      .map((w) => {
        const i = fakeVocab.indexOf(w);
        if (i < 0) throw new Error(`fake vocab lacks ${w}`);
        return i + 10;
      }),
  tokenString: (id) => (id === 1 ? '<|startoftext|>' : id === 2 ? '<|endoftext|>' : `${fakeVocab[id - 10]}</w>`),
};
