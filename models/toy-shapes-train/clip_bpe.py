"""A CLIP-format byte-level BPE tokenizer for the toy vocabulary: learns merges so every
vocabulary word is one token, writes vocab.json + merges.txt like openai/clip-vit-large-patch14,
and encodes text exactly as CLIPTokenizer does (for ASCII text; no ftfy).
"""
import json
import os
import re

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
# CLIP's pattern with \p{L} / \p{N} approximated by ASCII classes (the toy text is ASCII).
PATTERN = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z]+|[0-9]|[^\sa-zA-Z0-9]+",
    re.IGNORECASE)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words):
    """Classic BPE learning on the word list (each word once) until every word is one symbol.
    Ties broken lexicographically so the result is deterministic."""
    b2u = bytes_to_unicode()
    seqs = []
    for w in words:
        chars = [b2u[b] for b in w.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        seqs.append(chars)
    merges = []
    while True:
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for i, s in enumerate(seqs):
            out = []
            j = 0
            while j < len(s):
                if j + 1 < len(s) and (s[j], s[j + 1]) == best:
                    out.append(s[j] + s[j + 1])
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
    return merges


class ClipBpe:
    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.decoder = {v: k for k, v in vocab.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.b2u = bytes_to_unicode()
        self.bos_id = vocab[BOS]
        self.eos_id = vocab[EOS]
        self.cache = {}

    @classmethod
    def build(cls, words):
        merges = learn_merges(words)
        symbols = list(bytes_to_unicode().values())
        symbols = symbols + [s + "</w>" for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += [BOS, EOS]
        vocab = {}
        for s in symbols:
            if s not in vocab:
                vocab[s] = len(vocab)
        return cls(vocab, merges)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        self.cache[token] = word
        return word

    def tokens(self, text):
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for piece in PATTERN.findall(text):
            piece = "".join(self.b2u[b] for b in piece.encode("utf-8"))
            for t in self.bpe(piece):
                ids.append(self.encoder.get(t, self.eos_id))  # unknown -> unk = <|endoftext|>
        return ids

    def encode(self, text, length=MAX_LENGTH):
        """bos + tokens (truncated to length-2) + eos, padded with eos to `length`."""
        ids = [self.bos_id] + self.tokens(text)[: length - 2] + [self.eos_id]
        return ids + [self.eos_id] * (length - len(ids))

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, ensure_ascii=False)
        merges = sorted(self.ranks, key=self.ranks.get)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in merges:
                f.write(f"{a} {b}\n")
        special = {
            "bos_token": {"content": BOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "eos_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
            "pad_token": EOS,
            "unk_token": {"content": EOS, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        }
        with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
            json.dump(special, f, indent=2)
        config = {
            "add_prefix_space": False,
            "bos_token": special["bos_token"],
            "eos_token": special["eos_token"],
            "unk_token": special["unk_token"],
            "pad_token": EOS,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": MAX_LENGTH,
            "name_or_path": "toy-shapes/tokenizer",
            "tokenizer_class": "CLIPTokenizer",
        }
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
