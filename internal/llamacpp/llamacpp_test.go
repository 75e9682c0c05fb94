package llamacpp

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
)

// The chat-formatted prompt of the tests and SmolLM2's ids for it, parsing
// special tokens: <|im_start|>=1, "user", "\n", "Hello", " ", then the
// digits one per token (SmolLM2 splits numbers into single digits), and
// <|im_end|>=2.
const chatText = "<|im_start|>user\nHello 12345<|im_end|>"

var chatIDs = []int{1, 4093, 198, 19556, 216, 33, 34, 35, 36, 37, 2}

func TestLoadSmolLM2(t *testing.T) {
	gguf := testenv.SmolLM2(t)
	in := Load(t, gguf)
	if in.NVocab != 49152 || in.NLayer != 30 || in.NEmbd != 576 || in.NHead != 9 || in.NHeadKV != 3 {
		t.Errorf("llama.cpp sees vocab %d, %d layers, embd %d, heads %d/%d; want 49152, 30, 576, 9/3",
			in.NVocab, in.NLayer, in.NEmbd, in.NHead, in.NHeadKV)
	}
	if in.Meta["general.architecture"] != "llama" || in.Meta["tokenizer.ggml.pre"] != "smollm" {
		t.Errorf("metadata: architecture %q, pre-tokenizer %q", in.Meta["general.architecture"], in.Meta["tokenizer.ggml.pre"])
	}
	if in.BOS != 1 || in.EOS != 2 || in.VocabType != 2 {
		t.Errorf("bos %d eos %d vocab type %d; want 1 2 2 (BPE)", in.BOS, in.EOS, in.VocabType)
	}
	t.Logf("llama.cpp %s: %s, %d params; %s", in.Version, in.Desc, in.NParams, in.System)

	// a file that is not a GGUF is refused, with llama.cpp's reason
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	if err := os.WriteFile(bad, []byte("GGUF but not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadErr(t, bad); err == nil {
		t.Error("llama.cpp loaded a broken GGUF")
	}
}

func TestTokenize(t *testing.T) {
	gguf := testenv.SmolLM2(t)
	texts := []string{chatText, "", "héllo wörld 🙂", " 2024-01-01\tx\n\n"}
	special := Tokenize(t, gguf, texts, false, true)
	if !reflect.DeepEqual(special[0], chatIDs) {
		t.Errorf("parseSpecial: %v, want %v", special[0], chatIDs)
	}
	if len(special[1]) != 0 {
		t.Errorf("empty text gave %v", special[1])
	}
	// SmolLM2's GGUF does not ask for BOS, so add_special changes nothing
	if got := Tokenize(t, gguf, texts, true, true); !reflect.DeepEqual(got, special) {
		t.Errorf("addBOS changed the ids: %v vs %v", got, special)
	}
	// without special parsing the markers are plain text
	plain := Tokenize(t, gguf, texts[:1], false, false)[0]
	if len(plain) <= len(chatIDs) || plain[0] == 1 {
		t.Errorf("without parseSpecial: %v", plain)
	}
	back := Detokenize(t, gguf, special, true)
	for i := range texts {
		if back[i] != texts[i] {
			t.Errorf("detokenize(tokenize(%q)) = %q", texts[i], back[i])
		}
	}
	if got := Detokenize(t, gguf, [][]int{chatIDs}, false)[0]; got != "user\nHello 12345" {
		t.Errorf("detokenize without special tokens: %q", got)
	}
}

func maxAbsDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func TestLogitsAndGreedy(t *testing.T) {
	gguf := testenv.SmolLM2(t)
	ids := Tokenize(t, gguf, []string{chatText + "\n<|im_start|>assistant\n"}, false, true)[0]
	lg := Logits(t, gguf, ids, "")
	if len(lg) != len(ids) {
		t.Fatalf("%d rows of logits for %d ids", len(lg), len(ids))
	}
	for i, row := range lg {
		if len(row) != 49152 {
			t.Fatalf("row %d has %d logits", i, len(row))
		}
		for j, v := range row {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("logit [%d][%d] = %v", i, j, v)
			}
		}
	}
	// the same run twice gives the same bits
	if again := Logits(t, gguf, ids, ""); !reflect.DeepEqual(again, lg) {
		t.Error("two runs gave different logits")
	}
	// the last position alone (a different output matmul) agrees closely
	last := LastLogits(t, gguf, ids, "")
	if d := maxAbsDiff(last, lg[len(lg)-1]); d > 1e-3 {
		t.Errorf("last-position logits differ from the full run's last row by %g", d)
	}

	gen := Greedy(t, gguf, ids, 12)
	if again := Greedy(t, gguf, ids, 12); !reflect.DeepEqual(again, gen) {
		t.Errorf("greedy generation not deterministic: %v then %v", gen, again)
	}
	if gen[0] != argmax(lg[len(lg)-1]) {
		t.Errorf("first generated id %d is not the argmax %d of the prompt's last logits", gen[0], argmax(lg[len(lg)-1]))
	}
	// each generated token is the argmax of a full forward pass over what
	// came before it (the incremental decode and the batch agree)
	full := Logits(t, gguf, append(append([]int{}, ids...), gen[:len(gen)-1]...), "")
	for k, id := range gen {
		row := full[len(ids)-1+k]
		if a := argmax(row); a != id && row[a]-row[id] > 1e-3 {
			t.Errorf("generated id %d at step %d, but the full pass's argmax is %d (%g vs %g)", id, k, a, row[a], row[id])
		}
	}
	t.Logf("greedy: %q", Detokenize(t, gguf, [][]int{gen}, true)[0])
	// llama.cpp's own defaults (F16 KV cache, flash attention) move the
	// logits a little, not the prediction
	def := logits(t, gguf, ids, Options{LlamaDefaults: true}, true)[0]
	if d := maxAbsDiff(def, last); d == 0 || d > 2 || argmax(def) != argmax(last) {
		t.Errorf("LlamaDefaults: logits moved by %g, argmax %d vs %d", d, argmax(def), argmax(last))
	}
	if eog := GreedyWith(t, gguf, ids, 200, Options{StopAtEOG: true}); len(eog) == 0 || len(eog) > 200 {
		t.Errorf("StopAtEOG gave %d ids", len(eog))
	}
}

// loraFixture writes, with gguf-py, from SmolLM2's GGUF: base.gguf, the same
// model with blk.0.attn_q.weight and blk.0.attn_k.weight dequantized to F32;
// lora.gguf, a rank-4 adapter with alpha 8 on those two tensors (A (rank,
// in), B (out, rank) in numpy order, as convert_lora_to_gguf.py writes
// them); zero.gguf, the same with B = 0; and merged.gguf, base.gguf with
// W + (alpha/rank) B A in place of each W, which is what llama.cpp's LoRA
// must compute.
const loraFixture = `
import sys, os, numpy as np, gguf
from gguf import GGUFReader, GGUFWriter, GGUFValueType

src, out = sys.argv[1], sys.argv[2]
targets = ["blk.0.attn_q.weight", "blk.0.attn_k.weight"]
rank, alpha = 4, 8.0
scale = alpha / rank  # llama.cpp: user scale (1) * alpha / rank
r = GGUFReader(src)
arch = r.fields["general.architecture"].contents()

def copy_gguf(path, replace):
    w = GGUFWriter(path, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vt = f.types[0]
        w.add_key_value(name, f.contents(), vt, sub_type=f.types[-1] if vt == GGUFValueType.ARRAY else None)
    for t in r.tensors:
        if t.name in replace:
            w.add_tensor(t.name, replace[t.name])
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

def adapter(path, ab):
    w = GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, (a, b) in ab.items():
        w.add_tensor(name + ".lora_a", a)
        w.add_tensor(name + ".lora_b", b)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

rng = np.random.default_rng(0)
tensors = {t.name: t for t in r.tensors}
base, merged, ab, zero = {}, {}, {}, {}
for name in targets:
    t = tensors[name]
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)  # (out, in)
    a = rng.standard_normal((rank, w.shape[1])).astype(np.float32)
    b = rng.standard_normal((w.shape[0], rank)).astype(np.float32)
    b *= np.float32(0.5 * np.linalg.norm(w) / np.linalg.norm(scale * (b.astype(np.float64) @ a)))  # |update| = |W|/2
    base[name] = w
    merged[name] = (w + scale * (b.astype(np.float64) @ a)).astype(np.float32)
    ab[name] = (a, b)
    zero[name] = (a, np.zeros_like(b))
copy_gguf(os.path.join(out, "base.gguf"), base)
copy_gguf(os.path.join(out, "merged.gguf"), merged)
adapter(os.path.join(out, "lora.gguf"), ab)
adapter(os.path.join(out, "zero.gguf"), zero)
`

func TestLoRA(t *testing.T) {
	gguf := testenv.SmolLM2(t)
	Driver(t) // skip before the Python work when llama.cpp is missing
	dir := t.TempDir()
	testenv.RunPython(t, loraFixture, gguf, dir)
	base := filepath.Join(dir, "base.gguf")
	ids := chatIDs

	plain := Logits(t, base, ids, "")
	// B = 0: the adapter adds exact zeros
	if zero := Logits(t, base, ids, filepath.Join(dir, "zero.gguf")); !reflect.DeepEqual(zero, plain) {
		t.Error("an adapter with B = 0 changed the logits")
	}
	lora := Logits(t, base, ids, filepath.Join(dir, "lora.gguf"))
	merged := Logits(t, filepath.Join(dir, "merged.gguf"), ids, "")

	// q and k of layer 0 cannot change position 0, which attends only to
	// itself with weight exactly 1
	if !reflect.DeepEqual(lora[0], plain[0]) {
		t.Errorf("a LoRA on layer 0's q and k changed position 0 (by %g)", maxAbsDiff(lora[0], plain[0]))
	}
	// later positions change, and as merging W + (alpha/rank) B A predicts
	changed, off := 0.0, 0.0
	for i := 1; i < len(ids); i++ {
		changed = math.Max(changed, maxAbsDiff(lora[i], plain[i]))
		off = math.Max(off, maxAbsDiff(lora[i], merged[i]))
	}
	t.Logf("LoRA moved the logits by up to %.4g; adapter vs merged weights differ by up to %.3g", changed, off)
	if changed < 0.5 {
		t.Errorf("the adapter barely changed the logits (max %g)", changed)
	}
	if off > 0.01*changed || off > 0.05 {
		t.Errorf("adapter and merged weights differ by %g (the adapter's own effect is %g)", off, changed)
	}
}

// tinyF32 writes tiny-f32.gguf, a random float32 llama (2 layers, 64 wide, 4
// query and 2 KV heads, SmolLM2's vocabulary copied from its GGUF), and
// ref64.bin, its logits for the ids computed by numpy in float64 with the
// conventions llama.cpp applies to a llama GGUF: RMSNorm, RoPE on adjacent
// pairs (ggml's normal mode, the q/k rows being permuted by the converter),
// grouped-query heads, SwiGLU.
const tinyF32 = `
import sys, os, numpy as np
from gguf import GGUFReader, GGUFWriter, GGUFValueType, LlamaFileType

src, out = sys.argv[1], sys.argv[2]
ids = [int(x) for x in sys.argv[3].split(",")]
E, L, H, HKV, F = 64, 2, 4, 2, 160
D = E // H
eps, base = 1e-5, 10000.0
r = GGUFReader(src)
V = len(r.fields["tokenizer.ggml.tokens"].data)
rng = np.random.default_rng(1)
def rnd(*shape, s=1.0):
    return (rng.standard_normal(shape) * s / np.sqrt(shape[-1])).astype(np.float32)
W = {"token_embd.weight": rnd(V, E, s=np.sqrt(E)), "output_norm.weight": (1 + 0.1 * rng.standard_normal(E)).astype(np.float32),
     "output.weight": rnd(V, E, s=3)}
for l in range(L):
    p = f"blk.{l}."
    W[p+"attn_norm.weight"] = (1 + 0.1 * rng.standard_normal(E)).astype(np.float32)
    W[p+"ffn_norm.weight"] = (1 + 0.1 * rng.standard_normal(E)).astype(np.float32)
    W[p+"attn_q.weight"] = rnd(H*D, E, s=2); W[p+"attn_k.weight"] = rnd(HKV*D, E, s=2); W[p+"attn_v.weight"] = rnd(HKV*D, E)
    W[p+"attn_output.weight"] = rnd(E, H*D); W[p+"ffn_gate.weight"] = rnd(F, E); W[p+"ffn_up.weight"] = rnd(F, E); W[p+"ffn_down.weight"] = rnd(E, F)

w = GGUFWriter(os.path.join(out, "tiny-f32.gguf"), "llama")
w.add_name("tiny"); w.add_file_type(LlamaFileType.ALL_F32)
w.add_context_length(256); w.add_embedding_length(E); w.add_block_count(L); w.add_feed_forward_length(F)
w.add_head_count(H); w.add_head_count_kv(HKV); w.add_layer_norm_rms_eps(eps); w.add_rope_freq_base(base)
w.add_rope_dimension_count(D); w.add_vocab_size(V)
for name, f in r.fields.items():
    if name.startswith("tokenizer."):
        vt = f.types[0]
        w.add_key_value(name, f.contents(), vt, sub_type=f.types[-1] if vt == GGUFValueType.ARRAY else None)
for k, v in W.items(): w.add_tensor(k, v)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

def forward(dt):
    g = {k: v.astype(dt) for k, v in W.items()}
    T = len(ids)
    x = g["token_embd.weight"][ids]
    def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + dt(eps)) * w
    pos = np.arange(T)[:, None]
    theta = pos * base ** (-np.arange(0, D, 2) / D)  # (T, D/2)
    cos, sin = np.cos(theta).astype(dt), np.sin(theta).astype(dt)
    def rope(t):  # (T, nh, D), NORM mode: adjacent pairs
        a, b = t[..., 0::2], t[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        o = np.empty_like(t); o[..., 0::2] = a * c - b * s; o[..., 1::2] = a * s + b * c
        return o
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, g[p+"attn_norm.weight"])
        q = rope((h @ g[p+"attn_q.weight"].T).reshape(T, H, D))
        k = rope((h @ g[p+"attn_k.weight"].T).reshape(T, HKV, D))
        v = (h @ g[p+"attn_v.weight"].T).reshape(T, HKV, D)
        o = np.empty((T, H, D), dt)
        for hh in range(H):
            kv = hh // (H // HKV)
            s = q[:, hh] @ k[:, kv].T / dt(np.sqrt(D)) + mask
            s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
            o[:, hh] = s @ v[:, kv]
        x = x + o.reshape(T, E) @ g[p+"attn_output.weight"].T
        h = rms(x, g[p+"ffn_norm.weight"])
        gt = h @ g[p+"ffn_gate.weight"].T
        x = x + ((gt / (1 + np.exp(-gt))) * (h @ g[p+"ffn_up.weight"].T)) @ g[p+"ffn_down.weight"].T
    return rms(x, g["output_norm.weight"]) @ g["output.weight"].T
forward(np.float64).astype(np.float32).tofile(os.path.join(out, "ref64.bin"))
`

// TestF32MatchesNumpy shows that llama.cpp's logits of an F32 GGUF are a
// float32 computation of the float64 reference: within a few units in the
// last place of float32, for the best CPU kernels and the baseline ones.
func TestF32MatchesNumpy(t *testing.T) {
	gguf := testenv.SmolLM2(t)
	Driver(t)
	dir := t.TempDir()
	ids := chatIDs
	idList := ""
	for i, id := range ids {
		if i > 0 {
			idList += ","
		}
		idList += strconv.Itoa(id)
	}
	testenv.RunPython(t, tinyF32, gguf, dir, idList)
	raw, err := os.ReadFile(filepath.Join(dir, "ref64.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(dir, "tiny-f32.gguf")
	for _, cpu := range []string{"", "x64"} {
		got := LogitsWith(t, tiny, ids, Options{CPU: cpu})
		worst, scale := 0.0, 0.0
		for i, row := range got {
			for j, v := range row {
				ref := float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[(i*len(row)+j)*4:])))
				worst = math.Max(worst, math.Abs(float64(v)-ref))
				scale = math.Max(scale, math.Abs(ref))
			}
		}
		t.Logf("CPU variant %q: max |llama.cpp - float64| = %.3g on logits up to %.3g", cpu, worst, scale)
		if worst > 1e-5*scale {
			t.Errorf("CPU variant %q: llama.cpp's F32 logits differ from float64 by %g (logits up to %g)", cpu, worst, scale)
		}
	}
}
