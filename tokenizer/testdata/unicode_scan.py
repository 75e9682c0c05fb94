# Asks Python's `tokenizers` how it classifies every Unicode code point, for
# TestUnicodeScan (run with `go test ./tokenizer -run TestUnicodeScan
# -unicode-scan`, about half a minute). argv: WORKDIR. Prints JSON: for each
# predicate the code points for which it holds, the Lowercase normalizer's
# changes, and the output of a real SentencePiece Precompiled normalizer on
# probes around every code point.
import json
import os
import sys

import sentencepiece as spm
from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import T5TokenizerFast

workdir = sys.argv[1]
cps = [c for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]


def splits(p, s):
    return len(p.pre_tokenize_str(s))


punc, ws = pre_tokenizers.Punctuation(), pre_tokenizers.WhitespaceSplit()
digits, white = pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Whitespace()
bl, low = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), normalizers.Lowercase()
onig = {k: pre_tokenizers.Split(Regex(p), "removed") for k, p in [("onig_word", r"\w"), ("onig_digit", r"\d"), ("onig_space", r"\s")]}
out = {k: [] for k in ["punct", "space", "numeric", "word", "letter", "number", "gpt2_space", "onig_word", "onig_digit", "onig_space"]}
out["lower"] = {}
for c in cps:
    ch = chr(c)
    if splits(punc, "a" + ch + "a") == 3:
        out["punct"].append(c)
    if splits(ws, "a" + ch + "a") == 2:
        out["space"].append(c)
    if splits(digits, "a" + ch + "a") == 3:
        out["numeric"].append(c)
    w = white.pre_tokenize_str("a" + ch)
    if len(w) == 1 and w[0][0] == "a" + ch:
        out["word"].append(c)
    if splits(bl, "a" + ch) == 1:
        out["letter"].append(c)
    if splits(bl, "1" + ch) == 1:
        out["number"].append(c)
    if splits(bl, "\t" + ch + "\t") == 1:
        out["gpt2_space"].append(c)
    for k, p in onig.items():
        if splits(p, "#" + ch + "#") == 2:
            out[k].append(c)
    lc = low.normalize_str(ch)
    if lc != ch:
        out["lower"][c] = lc

lines = ["The quick brown fox jumps over the lazy dog.", "Ｆｕｌｌｗｉｄｔｈ ﬁ ① ½ Ⅻ", "café naïve", "中文 日本語 한국어"] * 50
prefix = os.path.join(workdir, "scan")
spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=50, model_type="unigram",
                               minloglevel=2)
path = os.path.join(workdir, "t5.json")
T5TokenizerFast(vocab_file=prefix + ".model", from_slow=True, extra_ids=0).backend_tokenizer.save(path)
from tokenizers import Tokenizer
norm = Tokenizer.from_file(path).normalizer
probes = []
for c in cps:
    ch = chr(c)
    probes.append(ch)
    if c < 0x800:
        probes += ["\uff21" + ch, "e" + ch]
    if c < 0x10000:
        probes.append(ch + "\u0301")
out["precompiled_file"] = path
out["probes"] = probes
out["normalized"] = [norm.normalize_str("x" + s + "x") for s in probes]
sys.stdout.write(json.dumps(out, ensure_ascii=False))
