# Reference side of the GGUF tokenizer tests (run by gguf_test.go).
#
# WORKDIR holds corpus.json, written by the Go test: {"corpus": [...],
# "train": [...]}. Each call prints one JSON object.
# argv: smollm2 WORKDIR GGUF
#   the tokenizer.ggml.* keys of the GGUF, read with gguf-py.
# argv: llama2 WORKDIR TOKENIZER_MODEL
#   the vocabulary llama.cpp's converter writes for the SentencePiece model
#   (pieces, scores, types, special ids), the tokenizer.json files
#   LlamaTokenizerFast converts it to (default, and without the space
#   prefix but with eos added) with their ids, and sentencepiece's ids.
# argv: lookahead WORKDIR
#   tokenizer.json files with the Llama 3 and Qwen2 split regexes over
#   small vocabularies trained here, with each corpus line's
#   pre-tokenization and ids.
# argv: encode WORKDIR FILES_JSON
#   FILES_JSON maps names to tokenizer.json paths; prints the ids of every
#   corpus line for each, with and without special tokens.
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def encode_all(tok, corpus):
    return {"ids": [tok.encode(t).ids for t in corpus],
            "plain": [tok.encode(t, add_special_tokens=False).ids for t in corpus]}


def gguf_vocab(path):
    import gguf
    r = gguf.GGUFReader(path)

    def get(key):
        f = r.fields.get(key)
        if f is None:
            return None
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            vals = [f.parts[i] for i in f.data]
            if f.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(v).decode("utf-8") for v in vals]
            return [v.tolist()[0] for v in vals]
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(v).decode("utf-8")
        return v.tolist()[0]

    out = {k: get("tokenizer.ggml." + k) for k in
           ["model", "pre", "tokens", "scores", "token_type", "merges", "add_bos_token", "add_eos_token", "add_space_prefix"]}
    for k in ["bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "seperator_token_id",
              "cls_token_id", "mask_token_id"]:
        v = get("tokenizer.ggml." + k)
        out[k] = -1 if v is None else v
    return out


def llama_vocab(path):
    # As llama.cpp's convert_hf_to_gguf.py (_create_vocab_sentencepiece) does.
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=path)
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(t)
    return sp, {"model": "llama", "pre": "default", "tokens": tokens, "scores": scores, "token_type": types,
                "bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "unknown_token_id": sp.unk_id(),
                "padding_token_id": sp.pad_id(), "seperator_token_id": -1, "cls_token_id": -1, "mask_token_id": -1}


def load(workdir):
    inp = json.load(open(os.path.join(workdir, "corpus.json"), encoding="utf-8"))
    return inp["corpus"], inp["train"]


def llama2(workdir, llama_model):
    from transformers import LlamaTokenizerFast
    corpus, _ = load(workdir)
    sp, vocab = llama_vocab(llama_model)
    res = {"vocab": vocab, "sentencepiece": [[sp.bos_id()] + sp.encode(t) for t in corpus]}
    for name, kw in [("hf", {"add_prefix_space": True}),
                     ("hf_noprefix_eos", {"add_prefix_space": False, "add_eos_token": True})]:
        backend = LlamaTokenizerFast(vocab_file=llama_model, from_slow=True, **kw).backend_tokenizer
        path = os.path.join(workdir, "llama2_%s.json" % name)
        backend.save(path)
        res[name] = {"file": path, **encode_all(Tokenizer.from_file(path), corpus)}
    return res


def lookahead(workdir):
    corpus, train = load(workdir)
    look = {}
    for name, pat, specials in [("llama3", LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>"]),
                                ("qwen2", QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]:
        tok = Tokenizer(models.BPE())
        trim = name == "llama3"
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=trim, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(train + corpus[::3], trainer)
        if name == "llama3":
            bos = specials[0]
            tok.post_processor = processors.Sequence([
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(single=bos + " $A", pair=bos + " $A " + bos + ":1 $B:1",
                                              special_tokens=[(bos, tok.token_to_id(bos))])])
        else:
            tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        path = os.path.join(workdir, name + ".json")
        tok.save(path)
        if name == "llama3":
            # Llama 3 looks words up whole before merging.
            doc = json.load(open(path, encoding="utf-8"))
            doc["model"]["ignore_merges"] = True
            json.dump(doc, open(path, "w", encoding="utf-8"), ensure_ascii=False)
        tok = Tokenizer.from_file(path)
        look[name] = {"file": path, "pre": [[s for s, _ in tok.pre_tokenizer.pre_tokenize_str(t)] for t in corpus],
                      **encode_all(tok, corpus)}
    return look


def encode(workdir, files_json):
    corpus, _ = load(workdir)
    files = json.load(open(files_json, encoding="utf-8"))
    return {name: encode_all(Tokenizer.from_file(path), corpus) for name, path in files.items()}


kind, args = sys.argv[1], sys.argv[2:]
if kind == "smollm2":
    result = gguf_vocab(args[1])
elif kind == "llama2":
    result = llama2(*args)
elif kind == "lookahead":
    result = lookahead(*args)
else:
    result = encode(*args)
sys.stdout.write(json.dumps(result, ensure_ascii=False))
