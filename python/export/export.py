"""Export a Hugging Face checkpoint to a migu model folder through PyTorch.

    python python/export/export.py HF_DIR OUT_DIR
    cd python && python -m export HF_DIR OUT_DIR

This is the alternative to `migu export` for users who prefer the PyTorch
exporter. It writes the same layout (see modeldir/manifest.go and
DESIGN.md): model.onnx with every weight in model.onnx.data, config.json
and tokenizer.json copied from HF_DIR, and migu.json, the manifest listing
every linear layer with its role. The graph has the Go exporter's inputs
and outputs, opset 17, standard ONNX operators only, dynamic batch and
sequence axes, and linear weights stored [d_in, d_out] under their Hugging
Face names.

Requirements: the pinned packages of python/requirements.txt (torch 1.13
from Debian, transformers 4.46.3, onnx 1.17, tokenizers, safetensors); use
the repository's .venv. torch, transformers and onnx are imported only once
the input has been checked, so bad input fails fast.

Workarounds for torch 1.13 + transformers 4.46, each explained where it
is applied:
  - eager attention (attn_implementation="eager"): the SDPA path needs
    torch >= 2.0;
  - use_cache=False and a wrapper whose forward takes exactly the graph
    inputs and returns the logits tensor (no cache objects in the trace);
    the Llama wrapper computes position_ids as the Go exporter does: a real
    token cumsum(mask) - 1, a padding position its index in the row;
  - the wrapper is put in eval mode: the exporter restores the mode it
    found, and a fresh module is in training mode (dropout on afterwards);
  - initializers are deduplicated by identity, not by value (torch would
    merge equal tensors, e.g. norm weights that are all ones);
  - the folded, transposed copy of a tied embedding is replaced by a
    Transpose of the embedding, as the Go exporter's tied head;
  - Gemm (a linear on a 2-D input: the classifier) becomes MatMul + Add;
  - Pow(x, 2) and Pow(x, 3) become products (cheaper gradients);
  - TracerWarnings are silenced: the Python branches they flag (e.g.
    `if sequence_length != 1` in the causal mask) give the same graph for
    every shape. torch.finfo(float32).min mask constants are kept: they
    stay finite in float32, and fully masked rows give a uniform softmax
    rather than NaN.

Exit status: 0 on success, 2 for bad input (a missing file, an unsupported
model), 1 for other failures; errors are one line on stderr. OUT_DIR must
not exist or be empty; the folder is written beside it under a temporary
name and renamed at the end, so a failed export leaves nothing behind.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

OPSET = 17
FORMAT_VERSION = 1  # migu.json format (modeldir.FormatVersion)
WRAPPER = "hf"  # attribute of the export wrapper holding the HF model

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "migu.json"


class BadInput(Exception):
    """An error in what the user gave us (exit status 2)."""


# ---------------------------------------------------------------------------
# Architectures: the transformers class, graph interface and the table that
# gives every nn.Linear its migu role (modeldir.Role). A linear that matches
# no pattern stops the export: the manifest must list every linear.

# (pattern on the module path, role); the first match wins.
LLAMA_ROLES = [
    (r"\.self_attn\.q_proj$", "q"),
    (r"\.self_attn\.k_proj$", "k"),
    (r"\.self_attn\.v_proj$", "v"),
    (r"\.self_attn\.o_proj$", "o"),
    (r"\.mlp\.gate_proj$", "ffn_gate"),
    (r"\.mlp\.up_proj$", "ffn_in"),
    (r"\.mlp\.down_proj$", "ffn_out"),
    (r"^lm_head$", "head"),
]
T5_ROLES = [
    (r"\.(SelfAttention|EncDecAttention)\.q$", "q"),
    (r"\.(SelfAttention|EncDecAttention)\.k$", "k"),
    (r"\.(SelfAttention|EncDecAttention)\.v$", "v"),
    (r"\.(SelfAttention|EncDecAttention)\.o$", "o"),
    (r"\.DenseReluDense\.wi$", "ffn_in"),  # T5 v1.0: relu
    (r"\.DenseReluDense\.wi_0$", "ffn_gate"),  # T5 v1.1: act(wi_0 x) * wi_1 x
    (r"\.DenseReluDense\.wi_1$", "ffn_in"),
    (r"\.DenseReluDense\.wo$", "ffn_out"),
    (r"^lm_head$", "head"),
]
ROBERTA_ROLES = [
    (r"\.attention\.self\.query$", "q"),
    (r"\.attention\.self\.key$", "k"),
    (r"\.attention\.self\.value$", "v"),
    (r"\.attention\.output\.dense$", "o"),
    (r"\.intermediate\.dense$", "ffn_in"),
    (r"\.layer\.\d+\.output\.dense$", "ffn_out"),
    # The MLM head (dense → gelu → layer norm → decoder) and the
    # classification head (dense → tanh → out_proj) are both "head".
    (r"^lm_head\.(dense|decoder)$", "head"),
    (r"^classifier\.(dense|out_proj)$", "head"),
]

# model_type → (migu architecture, role table, transformers class per
# objective). The variants are those `migu export` accepts too.
ARCHITECTURES = {
    "llama": ("llama", LLAMA_ROLES, {"clm": "LlamaForCausalLM"}),
    "mistral": ("llama", LLAMA_ROLES, {"clm": "MistralForCausalLM"}),
    "t5": ("t5", T5_ROLES, {"seq2seq": "T5ForConditionalGeneration"}),
    "mt5": ("t5", T5_ROLES, {"seq2seq": "MT5ForConditionalGeneration"}),
    "roberta": ("roberta", ROBERTA_ROLES, {"mlm": "RobertaForMaskedLM", "cls": "RobertaForSequenceClassification"}),
    "xlm-roberta": ("roberta", ROBERTA_ROLES, {"mlm": "XLMRobertaForMaskedLM", "cls": "XLMRobertaForSequenceClassification"}),
}

INPUTS = {
    "llama": ["input_ids", "attention_mask"],
    "t5": ["input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"],
    # token_type_ids is left out: RoBERTa has one token type, and HF fills
    # zeros when it is absent.
    "roberta": ["input_ids", "attention_mask"],
}


def fail(msg):
    raise BadInput(msg)


# ---------------------------------------------------------------------------
# Input checks (no torch needed)


def read_config(hf_dir):
    """Reads config.json and resolves what to export: returns (config dict,
    architecture, role table, transformers class name, objective)."""
    path = os.path.join(hf_dir, CONFIG_FILE)
    if not os.path.isdir(hf_dir):
        fail(f"{hf_dir}: no such folder; give a Hugging Face checkpoint folder")
    if not os.path.isfile(path):
        fail(f"{hf_dir}: no {CONFIG_FILE}; give a Hugging Face checkpoint folder (config.json, weights, tokenizer.json)")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")
    if not isinstance(cfg, dict):
        fail(f"{path}: not a JSON object")
    model_type = cfg.get("model_type")
    if not model_type:
        fail(f"{path}: field model_type is missing")
    if model_type not in ARCHITECTURES:
        fail(f"{path}: model_type {model_type!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})")
    arch, roles, classes = ARCHITECTURES[model_type]
    if len(classes) == 1:
        objective, cls = next(iter(classes.items()))
    else:
        # RoBERTa: the head follows the architectures entry (masked LM when
        # there is none), as in `migu export`.
        names = cfg.get("architectures") or []
        by_class = {c: o for o, c in classes.items()}
        if len(names) > 1:
            fail(f"{path}: field architectures lists {len(names)} classes ({', '.join(names)}); migu exports one head")
        if names and names[0] not in by_class:
            fail(f"{path}: field architectures: {names[0]!r} is not supported (supported: {', '.join(sorted(by_class))})")
        objective = by_class[names[0]] if names else "mlm"
        cls = classes[objective]
    return cfg, arch, roles, cls, objective


def read_tokenizer(hf_dir):
    """Reads tokenizer.json (raw bytes and parsed) from the checkpoint."""
    path = os.path.join(hf_dir, TOKENIZER_FILE)
    if not os.path.isfile(path):
        fail(f"{hf_dir}: no {TOKENIZER_FILE}: migu needs the tokenizer beside the weights")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        tok = json.loads(raw)
    except ValueError as e:
        fail(f"{path}: {e}")
    if not isinstance(tok, dict) or not isinstance(tok.get("model"), dict):
        fail(f"{path}: field model is missing")
    return raw, tok


def tokenizer_max_id(path, tok):
    """Returns the largest token id tokenizer.json can produce."""
    vocab = tok["model"].get("vocab")
    if isinstance(vocab, dict):
        ids = list(vocab.values())
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        ids = [len(vocab) - 1]
    else:
        fail(f"{path}: field model.vocab is neither a map nor a list")
    ids += [t.get("id", -1) for t in tok.get("added_tokens") or []]
    return max(ids, default=-1)


def check_out_dir(out_dir):
    """OUT_DIR must not exist or be an empty folder (as `migu export`)."""
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir) or os.listdir(out_dir):
            fail(f"{out_dir} already exists and is not empty; remove it or choose another OUT_DIR")


@contextlib.contextmanager
def staging(out_dir):
    """Yields a temporary folder beside out_dir; renames it to out_dir when
    the body succeeds, deletes it otherwise (also on Ctrl-C)."""
    dest = os.path.abspath(out_dir)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(dest) + ".tmp-", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if os.path.isdir(dest):
            os.rmdir(dest)  # an empty destination folder; rename cannot replace it
        os.rename(tmp, dest)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Model loading and the export wrappers


def load_model(hf_dir, cls_name):
    """Loads the transformers model in float32 with eager attention, and
    refuses a checkpoint that lacks tensors (from_pretrained would fill
    them with random values)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cls = getattr(transformers, cls_name)
    try:
        # Workaround: eager attention. The SDPA path needs torch >= 2.0 (and
        # exports a fused op torch 1.13 cannot); eager is the one path whose
        # trace is plain MatMul/Softmax.
        model, info = cls.from_pretrained(
            hf_dir, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
    except (OSError, ValueError, KeyError) as e:
        fail(f"{hf_dir}: {first_line(e)}")
    if info.get("missing_keys"):
        fail(f"{hf_dir}: tensor {sorted(info['missing_keys'])[0]} is missing from the checkpoint")
    if info.get("mismatched_keys"):
        name, got, want = info["mismatched_keys"][0]
        fail(f"{hf_dir}: tensor {name} has shape {list(got)}, the config implies {list(want)}")
    return model.eval()


def make_wrapper(model, arch):
    """Wraps the HF model in a module whose forward takes exactly the graph
    inputs and returns the logits tensor."""
    import torch

    class Llama(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            setattr(self, WRAPPER, m)

        def forward(self, input_ids, attention_mask):
            # Positions as the Go exporter numbers them: a real token counts
            # the real tokens before it, a padding position gets its index
            # (cumsum(mask) - 1 plus the padding so far). A right-padded row
            # gets transformers' default 0..S-1, padding included; a
            # left-padded row's text starts at 0.
            pad = 1 - attention_mask
            position_ids = attention_mask.cumsum(-1) - 1 + pad * pad.cumsum(-1)
            # use_cache=False: no DynamicCache object in the trace.
            return getattr(self, WRAPPER)(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).logits

    class T5(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            setattr(self, WRAPPER, m)

        def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask):
            return getattr(self, WRAPPER)(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                use_cache=False,
            ).logits

    class Roberta(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            setattr(self, WRAPPER, m)

        def forward(self, input_ids, attention_mask):
            return getattr(self, WRAPPER)(input_ids=input_ids, attention_mask=attention_mask).logits

    w = {"llama": Llama, "t5": T5, "roberta": Roberta}[arch](model)
    # Workaround: torch.onnx.export puts the module back into the training
    # mode it found it in; a fresh wrapper is in training mode, which would
    # switch dropout on in the HF model after the export.
    return w.eval()


def dummy_inputs(arch, cfg_obj):
    """Example inputs for the trace: batch 2, right padding in row 1, ids
    that avoid the pad token (RoBERTa derives positions from it)."""
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = cfg_obj.vocab_size
    pad = getattr(cfg_obj, "pad_token_id", None)

    def ids(b, s):
        x = torch.randint(0, vocab, (b, s), generator=g)
        if pad is not None:
            x[x == pad] = (pad + 1) % vocab
        return x

    def mask(b, s, keep):
        m = torch.ones(b, s, dtype=torch.long)
        m[1, keep:] = 0
        return m

    if arch == "t5":
        return (ids(2, 6), mask(2, 6, 4), ids(2, 5), mask(2, 5, 3))
    return (ids(2, 6), mask(2, 6, 4))


def dynamic_axes(arch, objective):
    """Symbolic dims, named as the Go exporter names them."""
    if arch == "t5":
        return {"input_ids": {0: "batch", 1: "src_seq"}, "attention_mask": {0: "batch", 1: "src_seq"},
                "decoder_input_ids": {0: "batch", 1: "tgt_seq"}, "decoder_attention_mask": {0: "batch", 1: "tgt_seq"},
                "logits": {0: "batch", 1: "tgt_seq"}}
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    axes["logits"] = {0: "batch"} if objective == "cls" else {0: "batch", 1: "seq"}
    return axes


@contextlib.contextmanager
def dedup_by_identity():
    """Workaround: torch 1.13 merges initializers with equal *values* when
    exporting in eval mode (_jit_pass_onnx_deduplicate_initializers), so
    e.g. freshly initialised norm weights (all ones) would become one shared
    tensor and train as one. In training mode the same pass merges only
    tensors that share storage (truly tied weights); force that mode."""
    import torch

    orig = torch._C._jit_pass_onnx_deduplicate_initializers

    def by_identity(graph, params, is_train):
        return orig(graph, params, True)

    torch._C._jit_pass_onnx_deduplicate_initializers = by_identity
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_deduplicate_initializers = orig


def torch_export(wrapper, arch, objective, inputs, path):
    import torch

    with dedup_by_identity(), warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings about Python bools (e.g. `if sequence_length != 1`
        # in the causal mask) are expected: those branches do not depend on
        # the shapes that vary.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            dummy_inputs(arch, wrapper_model(wrapper).config),
            path,
            input_names=inputs,
            output_names=["logits"],
            dynamic_axes=dynamic_axes(arch, objective),
            opset_version=OPSET,
            do_constant_folding=True,
            export_params=True,
            training=torch.onnx.TrainingMode.EVAL,
        )


def wrapper_model(wrapper):
    return getattr(wrapper, WRAPPER)


# ---------------------------------------------------------------------------
# Graph post-processing: names, linear layers, tied heads


class Graph:
    """Index over an onnx GraphProto: initializers, producers, consumers."""

    def __init__(self, graph):
        self.g = graph
        self.reindex()

    def reindex(self):
        self.inits = {t.name: t for t in self.g.initializer}
        self.producer = {}
        self.consumers = {}
        for n in self.g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def uses(self, value):
        return len(self.consumers.get(value, [])) + sum(o.name == value for o in self.g.output)

    def node_index(self, node):
        for i, n in enumerate(self.g.node):
            if n is node:
                return i
        raise KeyError(node.name)


def strip_wrapper_prefix(model_proto):
    """Drops the wrapper's scope from every name: initializers "hf.x.y" →
    "x.y" (the HF parameter name), nodes and values "/hf/x/..." → "/x/...".
    The wrapper's own nodes (Llama's position ids) already have short names
    such as "/CumSum"; a stripped name that would clash with one stays long."""
    g = model_proto.graph
    init_prefix, scope_prefix = WRAPPER + ".", "/" + WRAPPER + "/"

    def strip(name):
        if name.startswith(init_prefix):
            return name[len(init_prefix):]
        if name.startswith(scope_prefix):
            return name[len(scope_prefix) - 1:]
        return name

    values = {t.name for t in g.initializer} | {x for n in g.node for x in list(n.input) + list(n.output)}
    values |= {v.name for v in list(g.input) + list(g.output)}
    nodes = {n.name for n in g.node}
    keep_values = {x for x in values if strip(x) == x}
    keep_nodes = {x for x in nodes if strip(x) == x}

    def value(name):
        s = strip(name)
        return name if s != name and s in keep_values else s

    def node(name):
        s = strip(name)
        return name if s != name and s in keep_nodes else s

    for t in g.initializer:
        t.name = value(t.name)
    for n in g.node:
        n.name = node(n.name)
        n.input[:] = [value(x) for x in n.input]
        n.output[:] = [value(x) for x in n.output]
    for v in list(g.value_info) + list(g.input) + list(g.output):
        v.name = value(v.name)


def node_scope(node_name):
    """Module path of a node named after its scope:
    "/model/layers.0/self_attn/q_proj/MatMul" → "model.layers.0.self_attn.q_proj"."""
    return node_name.rsplit("/", 1)[0].strip("/").replace("/", ".")


def role_of(path, roles):
    for pattern, role in roles:
        if re.search(pattern, path):
            return role
    return None


def block_of(path):
    m = re.search(r"\.(?:layers|layer|block)\.(\d+)\.", path)
    return int(m.group(1)) if m else -1


def build_linears(model_proto, hf_model, arch, roles):
    """Finds the MatMul (or Gemm) of every nn.Linear of hf_model by its node
    scope, normalises it to MatMul(x, W[d_in, d_out]) (+ Add bias), renames
    W to the HF weight name, and returns the manifest's linear table."""
    import numpy as np
    import torch
    from onnx import helper, numpy_helper

    g = model_proto.graph
    ix = Graph(g)

    # Canonical name of each parameter: the first name torch gives a shared
    # tensor, which is the initializer's name in the graph.
    canonical = {}
    for name, p in hf_model.named_parameters():
        canonical.setdefault(p.data_ptr(), name)

    by_scope = {}
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm"):
            by_scope.setdefault(node_scope(n.name), []).append(n)

    linears = []
    for path, mod in hf_model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        role = role_of(path, roles)
        if role is None:
            raise RuntimeError(f"linear layer {path} has no role in the {arch} table; this model variant is not supported")
        d_in, d_out = mod.in_features, mod.out_features
        w_t = mod.weight.detach().float().numpy().T  # [d_in, d_out]
        w_name = canonical[mod.weight.data_ptr()]
        tied = w_name if w_name != path + ".weight" else ""
        b_name = canonical[mod.bias.data_ptr()] if mod.bias is not None else ""

        nodes = [n for n in by_scope.get(path, []) if len(n.input) >= 2]
        if len(nodes) != 1:
            raise RuntimeError(f"linear layer {path}: found {len(nodes)} MatMul/Gemm nodes in its scope, want 1")
        node = nodes[0]
        if node.op_type == "Gemm":
            node = gemm_to_matmul(g, ix, node, path)
            ix.reindex()
        x, w_in = node.input[0], node.input[1]

        if tied:
            # The exporter folded Transpose(embedding) into a transposed copy;
            # use the embedding itself through a Transpose node instead, as
            # the Go exporter's tied head does, so one tensor is trained.
            if w_name not in ix.inits:
                raise RuntimeError(f"linear layer {path}: tied weight {w_name} is not an initializer")
            scope = node.name.rsplit("/", 1)[0]
            t_out = scope + "/weight_t"
            tnode = helper.make_node("Transpose", [w_name], [t_out], name=scope + "/Transpose_weight", perm=[1, 0])
            g.node.insert(ix.node_index(node), tnode)
            node.input[1] = t_out
            ix.reindex()
            drop_if_unused(g, ix, w_in)
            emb = numpy_helper.to_array(ix.inits[w_name])
            if emb.shape != (d_out, d_in) or not np.array_equal(emb, w_t.T):
                raise RuntimeError(f"linear layer {path}: tied weight {w_name} does not hold the head's weight")
            weight = w_name
        else:
            init = ix.inits.get(w_in)
            if init is None:
                raise RuntimeError(f"linear layer {path}: MatMul {node.name} does not read its weight from an initializer")
            arr = numpy_helper.to_array(init)
            if arr.shape != (d_in, d_out):
                raise RuntimeError(f"linear layer {path}: weight has shape {list(arr.shape)}, want [{d_in}, {d_out}]")
            if not np.array_equal(arr, w_t):
                raise RuntimeError(f"linear layer {path}: initializer {w_in} does not hold the layer's weight")
            weight = path + ".weight"
            if w_in != weight:
                if weight in ix.inits or ix.uses(w_in) != 1:
                    raise RuntimeError(f"linear layer {path}: weight is shared with another operator; cannot store it transposed")
                rename_value(g, w_in, weight)
                ix.reindex()

        out = node.output[0]
        if b_name:
            adds = [c for c in ix.consumers.get(out, []) if c.op_type == "Add" and b_name in c.input]
            if len(adds) != 1:
                raise RuntimeError(f"linear layer {path}: no Add of bias {b_name} after {node.name}")
            out = adds[0].output[0]
            b = ix.inits.get(b_name)
            if b is None or list(b.dims) != [d_out]:
                raise RuntimeError(f"linear layer {path}: bias initializer {b_name} missing or not [{d_out}]")

        entry = {"name": path, "role": role, "block": block_of(path)}
        if arch == "t5":
            entry["stack"] = path.split(".")[0] if path.split(".")[0] in ("encoder", "decoder") else ""
        entry.update({"weight": weight, "bias": b_name, "node": node.name, "input": x, "output": out,
                      "d_in": d_in, "d_out": d_out, "tied": tied})
        if arch == "t5":
            entry["mask"] = t5_mask_of(path, role)
        linears.append({k: v for k, v in entry.items() if v != "" or k in ("name", "weight", "node", "input", "output")})
    return linears


def t5_mask_of(path, role):
    """The padding-mask input whose positions a T5 linear's output lies on
    (the manifest's linears[].mask): the decoder's layers and the LM head
    lie on decoder_attention_mask, except the cross-attention keys and
    values, computed from the encoder's output; the encoder's layers lie on
    attention_mask."""
    cross_kv = ".EncDecAttention." in path and role in ("k", "v")
    if (path.startswith("decoder.") and not cross_kv) or role == "head":
        return "decoder_attention_mask"
    return "attention_mask"


def gemm_to_matmul(g, ix, node, path):
    """Rewrites Gemm(x, W[out, in], b, transB=1) — what torch emits for a
    linear on a 2-D input, e.g. the classification head — as MatMul(x, Wᵀ)
    followed by Add(b), so every linear has the same shape in the graph and
    W is stored [d_in, d_out] like the others."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    want = {"transA": 0, "transB": 1, "alpha": 1.0, "beta": 1.0}
    if any(attrs.get(k, 1.0 if k in ("alpha", "beta") else 0) != v for k, v in want.items()):
        raise RuntimeError(f"linear layer {path}: unexpected Gemm attributes {attrs}")
    w = ix.inits.get(node.input[1])
    if w is None or ix.uses(w.name) != 1:
        raise RuntimeError(f"linear layer {path}: Gemm weight is not a private initializer")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
    scope = node.name.rsplit("/", 1)[0]
    out = node.output[0]
    mm_out = scope + "/MatMul_output_0" if len(node.input) > 2 else out
    mm = helper.make_node("MatMul", [node.input[0], w.name], [mm_out], name=scope + "/MatMul")
    new = [mm]
    if len(node.input) > 2 and node.input[2]:
        new.append(helper.make_node("Add", [mm_out, node.input[2]], [out], name=scope + "/Add"))
    i = ix.node_index(node)
    del g.node[i]
    for k, n in enumerate(new):
        g.node.insert(i + k, n)
    if len(new) > 1 and out not in {o.name for o in g.output}:
        rename_value(g, out, scope + "/Add_output_0")  # the value is now the Add's
    return mm


def rename_value(g, old, new):
    """Renames a value (initializer or node output) everywhere in g."""
    for t in list(g.initializer) + list(g.value_info):
        if t.name == old:
            t.name = new
    for n in g.node:
        n.input[:] = [new if x == old else x for x in n.input]
        n.output[:] = [new if x == old else x for x in n.output]


def drop_if_unused(g, ix, name):
    if name in ix.inits and ix.uses(name) == 0:
        g.initializer.remove(ix.inits[name])
        ix.reindex()


def simplify_pow(model_proto):
    """Rewrites Pow(x, 2) as x·x and Pow(x, 3) as x·x·x (RMSNorm's variance,
    gelu_new's cubic term): DESIGN.md asks for squares as Mul, whose
    gradient is cheaper than Pow's. Returns the number of rewrites."""
    from onnx import helper, numpy_helper

    g = model_proto.graph
    ix = Graph(g)
    consts = {}
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    for t in g.initializer:
        if not t.dims:
            consts[t.name] = numpy_helper.to_array(t)
    done = 0
    for node in list(g.node):
        if node.op_type != "Pow":
            continue
        e = consts.get(node.input[1])
        if e is None or e.size != 1 or float(e.reshape(())) not in (2.0, 3.0):
            continue
        x, y, name = node.input[0], node.output[0], node.name
        if float(e.reshape(())) == 2.0:
            new = [helper.make_node("Mul", [x, x], [y], name=name + "_sq")]
        else:
            new = [helper.make_node("Mul", [x, x], [y + "_sq"], name=name + "_sq"),
                   helper.make_node("Mul", [y + "_sq", x], [y], name=name + "_cube")]
        i = ix.node_index(node)
        del g.node[i]
        for k, n in enumerate(new):
            g.node.insert(i + k, n)
        ix.reindex()
        done += 1
    # Constants the Pow nodes used are dead now; drop those nobody reads.
    for n in list(g.node):
        if n.op_type == "Constant" and ix.uses(n.output[0]) == 0:
            g.node.remove(n)
    return done


def check_parameters(model_proto, hf_model):
    """Every parameter of the HF model must be its own initializer under its
    HF name (shared parameters once), so training can find and update it."""
    names = {t.name for t in model_proto.graph.initializer}
    seen = set()
    for name, p in hf_model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        if name not in names:
            raise RuntimeError(f"parameter {name} is not an initializer of the exported graph (folded into a constant?)")


def check_domains(model_proto):
    """Only the standard ONNX domain, as migu's Go side requires."""
    for op in model_proto.opset_import:
        if op.domain not in ("", "ai.onnx"):
            raise RuntimeError(f"the graph imports operator domain {op.domain!r}; migu needs standard ONNX operators only")
    for n in model_proto.graph.node:
        if n.domain not in ("", "ai.onnx"):
            raise RuntimeError(f"node {n.name} ({n.op_type}) is in domain {n.domain!r}; migu needs standard ONNX operators only")


# ---------------------------------------------------------------------------
# Manifest


def special_tokens(config, hf_dir):
    """bos, eos, pad, decoder_start and unk ids from the transformers config
    (so defaults resolve as transformers resolves them); a list keeps its
    first id (Llama 3's eos), negative ids mean none. Like `migu export`,
    nothing is taken from tokenizer.json."""
    out = {}
    for key in ("bos", "eos", "pad", "decoder_start", "unk"):
        v = getattr(config, key + "_token_id", None)
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            if v >= config.vocab_size:
                fail(f"{os.path.join(hf_dir, CONFIG_FILE)}: field {key}_token_id {v} is outside the vocabulary "
                     f"(vocab_size {config.vocab_size})")
            out[key] = v
    return out


def manifest(arch, objective, config, special, linears, hf_dir):
    """The migu.json content (modeldir.Manifest), field for field."""
    import torch
    import transformers

    if arch == "llama":
        hidden, layers = config.hidden_size, config.num_hidden_layers
        max_len = config.max_position_embeddings  # as `migu export`: the trained context
    elif arch == "t5":
        hidden, layers, max_len = config.d_model, config.num_layers, 0  # relative positions: no limit
    else:
        # Learned positions start after the padding index.
        hidden, layers = config.hidden_size, config.num_hidden_layers
        max_len = config.max_position_embeddings - config.pad_token_id - 1
    m = {
        "format": FORMAT_VERSION,
        "architecture": arch,
        "objective": objective,
        "inputs": INPUTS[arch],
        "outputs": ["logits"],
        "vocab_size": config.vocab_size,
        "hidden_size": hidden,
        "num_layers": layers,
    }
    if max_len > 0:
        m["max_length"] = max_len
    if objective == "cls":
        m["num_labels"] = config.num_labels
    m["special_tokens"] = special
    m["linears"] = linears
    m["source"] = {"exporter": "python", "from": hf_dir,
                   "version": f"torch {torch.__version__}, transformers {transformers.__version__}"}
    return m


# ---------------------------------------------------------------------------


def export_model(hf_dir, out_dir):
    """Exports the checkpoint in hf_dir to the model folder out_dir and
    returns the manifest. Raises BadInput for problems with the input."""
    cfg, arch, roles, cls_name, objective = read_config(hf_dir)
    tok_raw, tok = read_tokenizer(hf_dir)
    max_id = tokenizer_max_id(os.path.join(hf_dir, TOKENIZER_FILE), tok)
    vocab = cfg.get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        fail(f"{os.path.join(hf_dir, CONFIG_FILE)}: field vocab_size is missing or not a positive integer")
    if max_id >= vocab:
        fail(f"{os.path.join(hf_dir, TOKENIZER_FILE)}: token id {max_id} is past the model's embedding table "
             f"(vocab_size {vocab})")
    check_out_dir(out_dir)

    import onnx

    model = load_model(hf_dir, cls_name)
    special = special_tokens(model.config, hf_dir)
    with staging(out_dir) as stage:
        scratch = os.path.join(stage, ".torch")
        os.mkdir(scratch)
        torch_export(make_wrapper(model, arch), arch, objective, INPUTS[arch], os.path.join(scratch, MODEL_FILE))
        proto = onnx.load(os.path.join(scratch, MODEL_FILE))  # also loads external data of >2 GB models
        shutil.rmtree(scratch)

        strip_wrapper_prefix(proto)
        linears = build_linears(proto, model, arch, roles)
        simplify_pow(proto)
        check_parameters(proto, model)
        check_domains(proto)
        proto.graph.name = arch

        path = os.path.join(stage, MODEL_FILE)
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=0)
        onnx.checker.check_model(path)
        shutil.copyfile(os.path.join(hf_dir, CONFIG_FILE), os.path.join(stage, CONFIG_FILE))
        with open(os.path.join(stage, TOKENIZER_FILE), "wb") as f:
            f.write(tok_raw)
        m = manifest(arch, objective, model.config, special, linears, hf_dir)
        with open(os.path.join(stage, MANIFEST_FILE), "w", encoding="utf-8") as f:
            json.dump(m, f, indent=2)
            f.write("\n")
    return m


def first_line(e):
    s = str(e).strip() or type(e).__name__
    return s.splitlines()[0]


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="export",
        description="Export a Hugging Face checkpoint (Llama, T5, RoBERTa) to a migu model folder through PyTorch.",
    )
    p.add_argument("hf_dir", metavar="HF_DIR", help="checkpoint folder: config.json, weights (safetensors), tokenizer.json")
    p.add_argument("out_dir", metavar="OUT_DIR", help="model folder to create (must not exist or be empty)")
    args = p.parse_args(argv)
    try:
        m = export_model(args.hf_dir, args.out_dir)
    except BadInput as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("export: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # one line, as the Go CLI does; MIGU_EXPORT_DEBUG=1 for the trace
        if os.environ.get("MIGU_EXPORT_DEBUG"):
            raise
        print(f"export: {type(e).__name__}: {first_line(e)}", file=sys.stderr)
        return 1
    print(f"exported {m['architecture']} ({m['num_layers']} layers, {len(m['linears'])} linear layers, "
          f"vocab {m['vocab_size']}) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
