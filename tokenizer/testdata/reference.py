# Reference side of the tokenizer parity tests (run by parity_test.go).
#
# argv: WORKDIR LLAMA_MODEL_OR_EMPTY. WORKDIR holds input.json, written by
# the Go test: {"train": [...], "corpus": [...], "pairs": [[a, b], ...],
# "go": {name: path}, "decoders": [[decoder_json, [tokens...]], ...]}.
# This script builds tokenizers with Python's `tokenizers`, `transformers`
# and `sentencepiece`, saves them as tokenizer.json files in WORKDIR, encodes
# the corpus with each (and with the Go-trained files), and prints one JSON
# object with the results.
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

workdir, llama_model = sys.argv[1], sys.argv[2]
inp = json.load(open(os.path.join(workdir, "input.json"), encoding="utf-8"))
train, corpus, pairs = inp["train"], inp["corpus"], inp["pairs"]
files = {}


def save(name, tok):
    path = os.path.join(workdir, name + ".json")
    tok.save(path)
    files[name] = path


# (a) tokenizers trained here by the `tokenizers` library.
def roberta_like():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    save("hf_bytelevel", tok)

    # GPT-2 style: the split regex as a Split pre-tokenizer, ByteLevel without its own regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    save("hf_gpt2split", tok)


def unigram_like():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(train, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    save("hf_unigram", tok)


def misc_bpe():
    # A BERT-flavoured BPE: lowercase, punctuation and digit splits, word
    # suffixes, an unknown token, and added tokens with every flag.
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, continuing_subword_prefix="##",
                                  end_of_word_suffix="</w>", limit_alphabet=50, show_progress=False)
    tok.train_from_iterator(train, trainer)
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    tok.add_tokens([AddedToken("migu", single_word=True), AddedToken("hello world"), AddedToken("<b>", rstrip=True, normalized=False)])
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True)])
    save("hf_misc", tok)

    # Other pre-tokenizers over a byte-fallback-free BPE.
    tok2 = Tokenizer(models.BPE(unk_token="[UNK]", fuse_unk=True))
    tok2.normalizer = normalizers.Sequence([normalizers.Replace("\t", "    "), normalizers.Prepend("~")])
    tok2.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\d"), "isolated"),
                                                  pre_tokenizers.Split("-", "merged_with_previous"),
                                                  pre_tokenizers.Whitespace(), pre_tokenizers.BertPreTokenizer()])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], limit_alphabet=40, show_progress=False)
    tok2.train_from_iterator(train, trainer)
    tok2.decoder = decoders.WordPiece()
    save("hf_misc2", tok2)

    # Regex classes (\w, \s, \d) as Oniguruma reads them.
    tok3 = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok3.normalizer = normalizers.Replace(Regex(r"\s+"), " ")
    tok3.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+"), "isolated"),
                                                  pre_tokenizers.Split(Regex(r"\d|[\s\W]"), "removed")])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"], limit_alphabet=40, show_progress=False)
    tok3.train_from_iterator(train, trainer)
    save("hf_regex", tok3)

    # A word-level vocabulary over whitespace-and-punctuation words.
    tok4 = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok4.normalizer = normalizers.Lowercase()
    tok4.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False)
    tok4.train_from_iterator(train, trainer)
    save("hf_wordlevel", tok4)


# (b) the real Llama 2 model, converted by transformers.
def llama():
    if not llama_model:
        return
    from transformers import LlamaTokenizerFast
    t = LlamaTokenizerFast(vocab_file=llama_model, from_slow=True, add_prefix_space=True)
    save("llama", t.backend_tokenizer)
    t = LlamaTokenizerFast(vocab_file=llama_model, from_slow=True, add_prefix_space=True, legacy=False)
    save("llama_metaspace", t.backend_tokenizer)


# (c) a T5-style tokenizer from a SentencePiece unigram model with the
# default nmt_nfkc rules, so its precompiled_charsmap is real.
def t5():
    import sentencepiece as spm
    from transformers import T5TokenizerFast
    prefix = os.path.join(workdir, "t5sp")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(train), model_prefix=prefix, vocab_size=400, model_type="unigram",
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=0.995,
                                   minloglevel=2)
    files["t5sp_model"] = prefix + ".model"
    save("t5", T5TokenizerFast(vocab_file=prefix + ".model", from_slow=True, extra_ids=5).backend_tokenizer)
    save("t5_noextra", T5TokenizerFast(vocab_file=prefix + ".model", from_slow=True, extra_ids=0).backend_tokenizer)


roberta_like()
unigram_like()
misc_bpe()
llama()
t5()
files.update(inp["go"])


def byte_offsets(text, offsets):
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [[starts[a], starts[b]] for a, b in offsets]


results = {}
for name, path in files.items():
    if name.endswith("_model"):
        continue
    tok = Tokenizer.from_file(path)
    r = {"file": path, "vocab_size": tok.get_vocab_size(), "encodings": [], "pairs": []}
    for text in corpus:
        e = tok.encode(text)
        plain = tok.encode(text, add_special_tokens=False)
        r["encodings"].append({
            "ids": e.ids, "tokens": e.tokens, "type_ids": e.type_ids, "special": e.special_tokens_mask,
            "offsets": byte_offsets(text, e.offsets), "plain": plain.ids,
            "decode": tok.decode(e.ids, skip_special_tokens=False),
            "decode_skip": tok.decode(e.ids, skip_special_tokens=True),
        })
    for a, b in pairs:
        e = tok.encode(a, b)
        r["pairs"].append({"ids": e.ids, "type_ids": e.type_ids, "special": e.special_tokens_mask})
    # Truncation and padding, as a batch.
    tok.enable_truncation(max_length=12, direction="left", strategy="longest_first")
    tok.enable_padding(direction="left", pad_id=0, pad_type_id=3, pad_token="[P]", pad_to_multiple_of=4)
    batch = tok.encode_batch(corpus[:8])
    r["batch"] = [{"ids": e.ids, "mask": e.attention_mask, "type_ids": e.type_ids, "special": e.special_tokens_mask} for e in batch]
    pbatch = tok.encode_batch([tuple(p) for p in pairs])
    r["pair_batch"] = [{"ids": e.ids, "mask": e.attention_mask, "type_ids": e.type_ids} for e in pbatch]
    results[name] = r

dec = []
for spec, tokens in inp["decoders"]:
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": None, "post_processor": None, "decoder": spec,
           "model": {"type": "BPE", "vocab": {}, "merges": []}}
    dec.append(Tokenizer.from_str(json.dumps(doc)).decoder.decode(tokens))

sys.stdout.write(json.dumps({"files": files, "results": results, "decoders": dec}, ensure_ascii=False))
