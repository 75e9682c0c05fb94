"""Tests of python/export: tiny random checkpoints of each family are
exported, run in onnxruntime and compared with transformers; migu.json is
checked against the model's module tree; bad input fails with one line and
exit status 2, leaving nothing behind.

Run from the repository root: .venv/bin/python -m pytest -q python
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers
from onnx import numpy_helper
from tokenizers import Tokenizer, models

PYDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # python/
SCRIPT = os.path.join(PYDIR, "export", "export.py")
sys.path.insert(0, PYDIR)
import export as exporter  # noqa: E402  (python/export)

TOL = 1e-4

# Tiny configs, one per case the brief names. keep_norms leaves the norm
# weights at their initial ones, so equal-valued tensors exist and must
# still be exported as separate initializers.
CASES = {
    "llama_gqa": dict(cls="LlamaForCausalLM", config=dict(
        model_type="llama", vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)),
    "llama_tied": dict(cls="LlamaForCausalLM", config=dict(
        model_type="llama", vocab_size=96, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True)),
    "t5_relu": dict(cls="T5ForConditionalGeneration", keep_norms=True, config=dict(
        model_type="t5", vocab_size=80, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0)),
    "t5_gated_gelu": dict(cls="T5ForConditionalGeneration", config=dict(
        model_type="t5", vocab_size=80, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)),
    "roberta_mlm": dict(cls="RobertaForMaskedLM", config=dict(
        model_type="roberta", vocab_size=70, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=34, type_vocab_size=1, layer_norm_eps=1e-5)),
    "roberta_cls": dict(cls="RobertaForSequenceClassification", config=dict(
        model_type="roberta", vocab_size=70, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=34, type_vocab_size=1, layer_norm_eps=1e-5,
        num_labels=3)),
}


def make_checkpoint(case, path, seed=0):
    """Saves a random-init transformers model (safetensors) with a small
    WordLevel tokenizer.json and returns the model in eval mode. Every
    weight is randomised (norms around 1) so no identity value hides a
    mistake."""
    torch.manual_seed(seed)
    spec = CASES[case]
    config = transformers.AutoConfig.for_model(**spec["config"])
    model = getattr(transformers, spec["cls"])(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                if not spec.get("keep_norms"):
                    p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    vocab = {"[UNK]": 0, **{f"t{i}": i for i in range(1, min(config.vocab_size, 64))}}
    Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(os.path.join(path, "tokenizer.json"))
    return model


class Exported:
    """One exported case: the transformers model, folders, manifest, graph."""

    def __init__(self, case, model, hf, out):
        self.case, self.model, self.hf, self.out = case, model, hf, out
        with open(os.path.join(out, "migu.json")) as f:
            self.manifest = json.load(f)
        self.proto = onnx.load(os.path.join(out, "model.onnx"))
        self.inits = {t.name: t for t in self.proto.graph.initializer}
        self.session = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf, out = str(root / "hf"), str(root / "model")
    model = make_checkpoint(request.param, hf)
    assert exporter.main([hf, out]) == 0
    return Exported(request.param, model, hf, out)


# ---------------------------------------------------------------------------
# Numerics


def feeds_for(e, batch, seq, left=False, seed=1):
    """Right-padded int64 feeds (left-padded with left=True): row 1 keeps
    seq-2 tokens (at least one), the other rows keep all. Padding positions hold the pad
    id, which RoBERTa needs for its positions."""
    g = torch.Generator().manual_seed(seed + 10 * batch + seq)
    cfg = e.model.config
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0

    def ids_mask(b, s):
        ids = torch.randint(3, cfg.vocab_size, (b, s), generator=g)
        mask = torch.ones(b, s, dtype=torch.long)
        if left:
            mask[1, :2] = 0
        else:
            mask[1, max(1, s - 2):] = 0
        ids[mask == 0] = pad
        return ids, mask

    ids, mask = ids_mask(batch, seq)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if e.manifest["architecture"] == "t5":
        dec, dmask = ids_mask(batch, seq - 1)
        feeds.update(decoder_input_ids=dec, decoder_attention_mask=dmask)
    return feeds


def max_diff(e, feeds, hf_extra=None):
    with torch.no_grad():
        want = e.model(**feeds, **(hf_extra or {})).logits.numpy()
    got = e.session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    diff = np.abs(got - want)
    if diff.ndim == 3:  # compare real tokens only; padding positions carry no meaning
        mask = feeds["decoder_attention_mask" if "decoder_attention_mask" in feeds else "attention_mask"]
        diff = diff[mask.numpy() == 1]
    return float(diff.max())


def test_logits_match_transformers_at_several_shapes(exported):
    """ONNX Runtime logits equal transformers' on a right-padded batch, at
    three (batch, seq) shapes, so the dynamic axes work (T5's decoder gets
    seq - 1 tokens: 6, 3 and 1). For Llama also on a
    left-padded batch: a real token's position counts the real tokens
    before it, a padding position is its index, as in the Go exporter, so
    transformers gets the same position_ids."""
    diffs = [max_diff(exported, feeds_for(exported, b, s)) for b, s in ((2, 7), (3, 4), (2, 2))]
    if exported.manifest["architecture"] == "llama":
        feeds = feeds_for(exported, 2, 6, left=True)
        mask = feeds["attention_mask"]
        positions = torch.where(mask == 1, mask.cumsum(-1) - 1, torch.arange(mask.shape[-1]))
        diffs.append(max_diff(exported, feeds, {"position_ids": positions}))
    print(f"\n{exported.case}: max |Δlogit| = {max(diffs):.3g}")
    assert max(diffs) <= TOL, diffs


def test_graph_interface(exported):
    """Inputs are int64 with symbolic batch and sequence dims named as in
    the Go exporter; logits are float32 with a fixed last dim."""
    t5 = exported.manifest["architecture"] == "t5"
    seq, tgt = ("src_seq", "tgt_seq") if t5 else ("seq", "seq")

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    for v in exported.proto.graph.input:
        assert v.type.tensor_type.elem_type == onnx.TensorProto.INT64, v.name
        assert dims(v) == ["batch", tgt if v.name.startswith("decoder_") else seq], v.name
    (logits,) = exported.proto.graph.output
    assert logits.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    cfg = exported.model.config
    if exported.manifest["objective"] == "cls":
        assert dims(logits) == ["batch", cfg.num_labels]
    else:
        assert dims(logits) == ["batch", tgt, cfg.vocab_size]


# ---------------------------------------------------------------------------
# Layout and graph


def test_folder_layout(exported):
    out = exported.out
    assert sorted(os.listdir(out)) == ["config.json", "migu.json", "model.onnx", "model.onnx.data", "tokenizer.json"]
    for name in ("config.json", "tokenizer.json"):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(exported.hf, name), "rb") as b:
            assert a.read() == b.read(), name
    parent = os.path.dirname(out)
    assert not [n for n in os.listdir(parent) if ".tmp-" in n], "staging folder left behind"
    # Every initializer lives in model.onnx.data.
    raw = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    for t in raw.graph.initializer:
        assert t.data_location == onnx.TensorProto.EXTERNAL, t.name
        assert {kv.key: kv.value for kv in t.external_data}["location"] == "model.onnx.data"


def test_standard_domain_only(exported):
    p = exported.proto
    assert [(o.domain, o.version) for o in p.opset_import] == [("", 17)]
    assert all(n.domain == "" for n in p.graph.node)
    assert not [n.name for n in p.graph.node if n.op_type == "Pow"], "squares should be Mul"
    onnx.checker.check_model(os.path.join(exported.out, "model.onnx"))


def test_every_parameter_is_its_own_initializer(exported):
    """Parameters keep their HF names (linear weights transposed); equal
    values are not merged into one tensor, shared (tied) ones appear once."""
    linears = {l["name"] + ".weight": l for l in exported.manifest["linears"] if "tied" not in l}
    seen = set()
    for name, p in exported.model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        assert name in exported.inits, f"{name} is not an initializer"
        got = numpy_helper.to_array(exported.inits[name])
        want = p.detach().numpy()
        if name in linears:
            want = want.T
        np.testing.assert_array_equal(got, want, err_msg=name)


# ---------------------------------------------------------------------------
# migu.json


def expected_role(name):
    """Roles by the module's own name, written independently of the
    exporter's pattern table."""
    last = name.split(".")[-1]
    table = {
        "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
        "gate_proj": "ffn_gate", "up_proj": "ffn_in", "down_proj": "ffn_out",
        "q": "q", "k": "k", "v": "v", "o": "o", "wi": "ffn_in", "wi_0": "ffn_gate", "wi_1": "ffn_in", "wo": "ffn_out",
        "query": "q", "key": "k", "value": "v",
    }
    if name.startswith(("lm_head", "classifier")):
        return "head"
    if name.endswith("attention.output.dense"):
        return "o"
    if name.endswith("intermediate.dense"):
        return "ffn_in"
    if name.endswith("output.dense"):
        return "ffn_out"
    return table[last]


def test_manifest_header(exported):
    m, cfg = exported.manifest, exported.model.config
    arch = m["architecture"]
    assert m["format"] == 1
    assert arch == exported.case.split("_")[0]
    assert m["objective"] == {"llama_gqa": "clm", "llama_tied": "clm", "t5_relu": "seq2seq", "t5_gated_gelu": "seq2seq",
                              "roberta_mlm": "mlm", "roberta_cls": "cls"}[exported.case]
    assert m["inputs"] == [i.name for i in exported.proto.graph.input]
    want_inputs = ["input_ids", "attention_mask"] + (["decoder_input_ids", "decoder_attention_mask"] if arch == "t5" else [])
    assert m["inputs"] == want_inputs
    assert m["outputs"] == ["logits"] == [o.name for o in exported.proto.graph.output]
    assert m["vocab_size"] == cfg.vocab_size
    assert m["hidden_size"] == (cfg.d_model if arch == "t5" else cfg.hidden_size)
    assert m["num_layers"] == (cfg.num_layers if arch == "t5" else cfg.num_hidden_layers)
    if arch == "roberta":
        assert m["max_length"] == cfg.max_position_embeddings - cfg.pad_token_id - 1
    if m["objective"] == "cls":
        assert m["num_labels"] == 3
    else:
        assert "num_labels" not in m
    want_special = {"llama": {"bos": 1, "eos": 2}, "t5": {"pad": 0, "eos": 1, "decoder_start": 0},
                    "roberta": {"bos": 0, "eos": 2, "pad": 1}}[arch]
    assert m["special_tokens"] == want_special
    assert m["source"]["exporter"] == "python" and m["source"]["from"] == exported.hf


def test_manifest_lists_every_linear(exported):
    m, model, g = exported.manifest, exported.model, exported.proto.graph
    producers = {o: n for n in g.node for o in n.output}
    nodes = {n.name: n for n in g.node}
    modules = {n: mod for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    names = [l["name"] for l in m["linears"]]
    assert len(names) == len(set(names)), "a linear is listed twice"
    assert sorted(names) == sorted(modules)

    embeddings = {p.data_ptr(): n for n, p in model.named_parameters()}  # first name of each tensor
    for l in m["linears"]:
        mod, name = modules[l["name"]], l["name"]
        assert l["role"] == expected_role(name), name
        assert (l["d_in"], l["d_out"]) == (mod.in_features, mod.out_features), name
        digits = [int(p) for p in name.split(".") if p.isdigit()]
        assert l["block"] == (digits[0] if digits else -1), name
        if m["architecture"] == "t5" and name != "lm_head":
            assert l["stack"] == name.split(".")[0]
        else:
            assert "stack" not in l
        node = nodes[l["node"]]
        assert node.op_type == "MatMul" and node.input[0] == l["input"], name
        w = numpy_helper.to_array(exported.inits[l["weight"]])
        if "tied" in l:
            # As the Go exporter's tied head: the embedding itself, [vocab, hidden], through a Transpose.
            assert l["tied"] == l["weight"] == embeddings[mod.weight.data_ptr()] != name + ".weight"
            assert w.shape == (l["d_out"], l["d_in"])
            t = producers[node.input[1]]
            assert t.op_type == "Transpose" and t.input[0] == l["weight"]
        else:
            assert l["weight"] == name + ".weight" and node.input[1] == l["weight"]
            assert w.shape == (l["d_in"], l["d_out"]), name
        np.testing.assert_array_equal(w if "tied" in l else w.T, mod.weight.detach().numpy())
        if mod.bias is not None:
            b = exported.inits[l["bias"]]
            assert list(b.dims) == [l["d_out"]]
            add = producers[l["output"]]
            assert add.op_type == "Add" and set(add.input) == {node.output[0], l["bias"]}, name
        else:
            assert "bias" not in l and l["output"] == node.output[0]
        assert l["output"] in producers


# ---------------------------------------------------------------------------
# Command line and bad input


def run_cli(args, cwd=None, module=False):
    cmd = [sys.executable, "-m", "export"] if module else [sys.executable, SCRIPT]
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_bad_input(res, out, *words):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not os.path.exists(out), "partial output folder"
    assert not [n for n in os.listdir(os.path.dirname(out)) if ".tmp-" in n], "staging folder left behind"


def test_cli_python_m(tmp_path):
    """`python -m export` from python/ exports and prints one line."""
    hf, out = str(tmp_path / "hf"), str(tmp_path / "model")
    make_checkpoint("roberta_cls", hf)
    res = run_cli([hf, out], cwd=PYDIR, module=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("exported roberta") and res.stderr == ""
    assert os.path.isfile(os.path.join(out, "model.onnx.data"))


def test_missing_config(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "tokenizer.json").write_text("{}")
    out = str(tmp_path / "model")
    assert_bad_input(run_cli([str(hf), out]), out, "config.json")


def test_unsupported_model_type(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    out = str(tmp_path / "model")
    assert_bad_input(run_cli([str(hf), out]), out, "'gpt2'", "not supported")


def test_missing_weights(tmp_path):
    """Fails after torch is loaded: still one line, exit 2, no output."""
    hf, out = tmp_path / "hf", str(tmp_path / "model")
    make_checkpoint("roberta_cls", str(hf))
    os.remove(hf / "model.safetensors")
    assert_bad_input(run_cli([str(hf), out]), out, str(hf))


def test_out_dir_not_empty(tmp_path):
    hf, out = tmp_path / "hf", tmp_path / "model"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}))
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(hf / "tokenizer.json"))
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = run_cli([str(hf), str(out)])
    assert res.returncode == 2 and "not empty" in res.stderr
    assert os.listdir(out) == ["keep.txt"]


def test_tokenizer_past_vocab(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 2}))
    Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]")).save(str(hf / "tokenizer.json"))
    out = str(tmp_path / "model")
    assert_bad_input(run_cli([str(hf), out]), out, "tokenizer.json", "vocab_size 2")
