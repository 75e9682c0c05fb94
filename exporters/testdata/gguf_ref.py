"""Reference side of the GGUF tests: llama.cpp's gguf-py and transformers.

  gguf_ref.py tiny TYPE TIED OUT.gguf
      builds a random tiny LlamaForCausalLM (hidden 64, 2 layers, 4 query
      and 2 key-value heads, vocabulary 300; TIED 1 ties the head to the
      embeddings), writes it as a GGUF the way llama.cpp's converter lays
      it out (tensor names from gguf-py's own name map, query/key rows
      interleaved, matrices in TYPE: F32 or Q8_0 via gguf.quants.quantize),
      with a small byte-level BPE vocabulary and a ChatML chat template.
  gguf_ref.py logits FILE.gguf IDS.json OUT.bin
      loads a llama GGUF into transformers (gguf-py dequantizes, the rows
      are put back in Hugging Face order, embeddings tied when output.weight
      is absent) and writes the float32 logits of IDS (a list of rows).
  gguf_ref.py hf FILE.gguf OUT_DIR
      saves that transformers model as a Hugging Face folder (float32
      safetensors), for the benchmarks' PyTorch side.
  gguf_ref.py dump FILE.gguf OUT.json
      what gguf-py's reader sees: every key with its value type and value,
      every tensor with its type, GGUF dims and the SHA-256 of its values
      dequantized to little-endian float32.
  gguf_ref.py peft FILE.gguf ADAPTER_DIR IDS.json OUT.bin
      the logits of the same model with a PEFT adapter folder loaded by
      PEFT's PeftModel.from_pretrained (not merged).
  gguf_ref.py greedy FILE.gguf IDS.json N OUT.json
      the same model, N greedy steps from each prompt of IDS with a plain
      loop over forward calls and transformers' key/value cache (generate()
      is not used): the generated ids, one list per prompt.
"""
import json
import sys

import numpy as np
import torch
import transformers
import gguf


def bytes_to_unicode():
    # GPT-2's table: printable bytes stand for themselves, the rest map to
    # code points from 256 on, in byte order.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def permute(w, n_head):
    # llama.cpp's converter: rotary halves of each head interleaved.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def tiny(typ, tied, out):
    torch.manual_seed(3)
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=128, tie_word_embeddings=tied == "1")
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    qtype = getattr(gguf.GGMLQuantizationType, typ)
    n_layer = cfg.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0 if typ == "F32" else 7)
    b2u = bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"]
    tokens = ["<|endoftext|>"] + [b2u[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    tokens += ["<|im_start|>", "<|im_end|>"]
    assert len(tokens) <= cfg.vocab_size
    types = [gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 3) + [gguf.TokenType.CONTROL] * 2
    for i in range(len(tokens), cfg.vocab_size):
        tokens.append("[PAD%d]" % i)
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if "rotary_emb" in name:
            continue
        data = t.float().numpy()
        if name.endswith("q_proj.weight"):
            data = permute(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute(data, cfg.num_key_value_heads)
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, name
        if data.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(gname, q, raw_dtype=qtype)
        else:
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def load(path):
    r = gguf.GGUFReader(path)
    field = lambda k, d=None: r.fields[k].contents() if k in r.fields else d
    assert field("general.architecture") == "llama"
    tensors = {t.name: t for t in r.tensors}
    n_layer = int(field("llama.block_count"))
    heads = int(field("llama.attention.head_count"))
    kv = int(field("llama.attention.head_count_kv", heads))
    hidden = int(field("llama.embedding_length"))
    embd = tensors["token_embd.weight"]
    cfg = transformers.LlamaConfig(
        vocab_size=int(embd.shape[1]),
        hidden_size=hidden,
        intermediate_size=int(field("llama.feed_forward_length")),
        num_hidden_layers=n_layer,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=int(field("llama.attention.key_length", hidden // heads)),
        rms_norm_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("llama.rope.freq_base", 10000.0)),
        max_position_embeddings=int(field("llama.context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias="blk.0.attn_q.bias" in tensors,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    state = {}
    for name, ref in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        t = tensors.pop(gname)
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(ref.shape))
        if name.endswith("q_proj.weight"):
            data = unpermute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = unpermute(data, kv)
        state[name] = torch.from_numpy(np.ascontiguousarray(data))
    assert not tensors, "tensors left over: %s" % sorted(tensors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model


def logits(path, ids_path, out, model=None):
    model = model if model is not None else load(path)
    ids = torch.tensor(json.load(open(ids_path)), dtype=torch.long)
    with torch.no_grad():
        out_logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().numpy()
    np.ascontiguousarray(out_logits, dtype="<f4").tofile(out)


def peft_logits(path, adapter, ids_path, out):
    import peft
    model = peft.PeftModel.from_pretrained(load(path), adapter).eval()
    logits(path, ids_path, out, model)


def save_hf(path, out):
    load(path).save_pretrained(out, safe_serialization=True)


def greedy(path, ids_path, n, out):
    model = load(path)
    result = []
    for prompt in json.load(open(ids_path)):
        x = torch.tensor([prompt], dtype=torch.long)
        gen, past = [], transformers.DynamicCache()
        with torch.no_grad():
            for _ in range(int(n)):
                step = model(input_ids=x, past_key_values=past, use_cache=True)
                past = step.past_key_values
                gen.append(int(step.logits[0, -1].argmax()))
                x = torch.tensor([[gen[-1]]], dtype=torch.long)
        result.append(gen)
    json.dump(result, open(out, "w"))


def dump(path, out):
    import hashlib
    r = gguf.GGUFReader(path)
    kvs = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        types = [gguf.GGUFValueType(t).name for t in f.types]
        value = f.contents()
        if isinstance(value, float):
            value = float(np.float32(value)) if types[-1] == "FLOAT32" else value
        kvs[key] = {"types": types, "value": value}
    tensors = {}
    for t in r.tensors:
        vals = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        tensors[t.name] = {"type": t.tensor_type.name, "dims": [int(d) for d in t.shape],
                           "sha256": hashlib.sha256(np.ascontiguousarray(vals).tobytes()).hexdigest()}
    json.dump({"kv": kvs, "tensors": tensors}, open(out, "w"))


if __name__ == "__main__":
    {"tiny": tiny, "logits": logits, "peft": peft_logits, "hf": save_hf, "greedy": greedy, "dump": dump}[sys.argv[1]](*sys.argv[2:])
