package exporters

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/gguf"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
)

// chatMLTemplate is the chat template the reference script's tiny GGUFs
// carry.
const chatMLTemplate = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"

// ggufRef is the reference script of the GGUF tests (gguf-py and
// transformers).
const ggufRef = "exporters/testdata/gguf_ref.py"

// tinyGGUF has the reference script write a random tiny Llama as a GGUF the
// way llama.cpp's converter does (gguf-py's writer and name map, rotary
// rows interleaved, matrices as typ: F32 or Q8_0) and returns its path.
func tinyGGUF(t *testing.T, typ string, tied bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	testenv.RunScript(t, ggufRef, "tiny", typ, map[bool]string{true: "1", false: "0"}[tied], path)
	return path
}

// ggufReferenceLogits has transformers run the GGUF at path (dequantized
// by gguf-py, rows put back by the script's own unpermute) on rows of ids.
func ggufReferenceLogits(t *testing.T, path string, ids [][]int64) []float32 {
	t.Helper()
	dir := t.TempDir()
	raw, err := json.Marshal(ids)
	if err != nil {
		t.Fatal(err)
	}
	idsPath, out := filepath.Join(dir, "ids.json"), filepath.Join(dir, "logits.bin")
	if err := os.WriteFile(idsPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunScript(t, ggufRef, "logits", path, idsPath, out)
	return readFloats(t, out)
}

func TestExportGGUFMatchesTransformers(t *testing.T) {
	ids := [][]int64{{1, 5, 9, 44, 200, 13, 17, 250, 3}, {7, 7, 7, 100, 101, 102, 103, 299, 0}}
	mask := [][]int64{{1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1}}
	for _, c := range []struct {
		typ  string
		tied bool
	}{{"F32", false}, {"F32", true}, {"Q8_0", false}} {
		t.Run(c.typ+map[bool]string{true: "_tied", false: ""}[c.tied], func(t *testing.T) {
			path := tinyGGUF(t, c.typ, c.tied)
			out := filepath.Join(t.TempDir(), "model")
			man, err := Export(path, out)
			if err != nil {
				t.Fatal(err)
			}
			want := ggufReferenceLogits(t, path, ids)
			got, shape := runModel(t, out, map[string][][]int64{"input_ids": ids, "attention_mask": mask})
			compareLogits(t, got, want, shape, []int64{2, 9, 300}, mask, 1e-4)
			checkGraph(t, out, man)

			head := man.Linears[len(man.Linears)-1]
			if (head.Tied != "") != c.tied {
				t.Errorf("head tied to %q, want tied=%v", head.Tied, c.tied)
			}
			var tc struct {
				ChatTemplate string `json:"chat_template"`
				BOS          string `json:"bos_token"`
				EOS          string `json:"eos_token"`
			}
			raw, err := os.ReadFile(filepath.Join(out, modeldir.TokenizerConfigFile))
			if err != nil || json.Unmarshal(raw, &tc) != nil {
				t.Fatalf("tokenizer_config.json: %v", err)
			}
			if tc.ChatTemplate != chatMLTemplate || tc.BOS != "<|im_start|>" || tc.EOS != "<|im_end|>" {
				t.Errorf("tokenizer_config.json = %s", raw)
			}
			if man.SpecialTokens["eos"] != 263 || man.SpecialTokens["bos"] != 262 {
				t.Errorf("special tokens %v, want bos 262 eos 263", man.SpecialTokens)
			}
		})
	}
}

func TestRotaryPermutation(t *testing.T) {
	// Two heads of four rows (two rotary pairs each), two columns: row r
	// holds r*10 and r*10+1.
	rows, cols, heads := int64(8), int64(2), int64(2)
	hf := make([]float32, rows*cols)
	for i := range hf {
		hf[i] = float32(i/2*10 + i%2)
	}
	g := append([]float32(nil), hf...)
	if err := PermuteRotary(g, rows, cols, heads); err != nil {
		t.Fatal(err)
	}
	// llama.cpp's order within a head of d=4: rows 0, 2, 1, 3.
	wantRows := []int{0, 2, 1, 3, 4, 6, 5, 7}
	for r, src := range wantRows {
		if g[r*2] != float32(src*10) || g[r*2+1] != float32(src*10+1) {
			t.Fatalf("permuted row %d = %v, want HF row %d", r, g[r*2:r*2+2], src)
		}
	}
	if err := UnpermuteRotary(g, rows, cols, heads); err != nil {
		t.Fatal(err)
	}
	for i := range hf {
		if g[i] != hf[i] {
			t.Fatalf("unpermute(permute(x)) differs at %d", i)
		}
	}
	if err := PermuteRotary(g, 6, 2, 4); err == nil {
		t.Fatal("6 rows as 4 heads accepted")
	}
}

// ggufFixture writes a minimal valid llama GGUF with gguf's own writer,
// changed by edit (which may drop or replace keys and tensors), for the
// bad-input cases.
func ggufFixture(t *testing.T, edit func(kvs map[string]gguf.KV, tensors map[string][]int64)) string {
	t.Helper()
	const h, ff, vocab = 8, 12, 6
	kvs := map[string]gguf.KV{}
	add := func(kv gguf.KV) { kvs[kv.Key] = kv }
	u32 := func(k string, v uint32) { add(gguf.KV{Key: k, Type: gguf.Uint32, Value: v}) }
	add(gguf.KV{Key: "general.architecture", Type: gguf.String, Value: "llama"})
	u32("llama.block_count", 1)
	u32("llama.embedding_length", h)
	u32("llama.feed_forward_length", ff)
	u32("llama.attention.head_count", 2)
	u32("llama.attention.head_count_kv", 1)
	add(gguf.KV{Key: "llama.attention.layer_norm_rms_epsilon", Type: gguf.Float32, Value: float32(1e-5)})
	add(gguf.KV{Key: "tokenizer.ggml.model", Type: gguf.String, Value: "gpt2"})
	add(gguf.KV{Key: "tokenizer.ggml.tokens", Type: gguf.Array, ElemType: gguf.String, Value: []string{"a", "b", "c", "d", "e", "f"}})
	add(gguf.KV{Key: "tokenizer.ggml.merges", Type: gguf.Array, ElemType: gguf.String, Value: []string{}})
	tensors := map[string][]int64{
		"token_embd.weight": {vocab, h}, "output_norm.weight": {h},
		"blk.0.attn_norm.weight": {h}, "blk.0.ffn_norm.weight": {h},
		"blk.0.attn_q.weight": {h, h}, "blk.0.attn_k.weight": {h / 2, h}, "blk.0.attn_v.weight": {h / 2, h},
		"blk.0.attn_output.weight": {h, h}, "blk.0.ffn_gate.weight": {ff, h}, "blk.0.ffn_up.weight": {ff, h},
		"blk.0.ffn_down.weight": {h, ff},
	}
	edit(kvs, tensors)
	w := gguf.NewWriter()
	for _, kv := range kvs {
		if err := w.AddKV(kv); err != nil {
			t.Fatal(err)
		}
	}
	for name, shape := range tensors {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		if err := w.AddTensor(name, gguf.F32, shape, func() ([]byte, error) { return gguf.Quantize(gguf.F32, make([]float32, n)) }); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := w.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExportGGUFBadInput(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(kvs map[string]gguf.KV, tensors map[string][]int64)
		want string
	}{
		{"valid", func(map[string]gguf.KV, map[string][]int64) {}, ""},
		{"unknown architecture", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["general.architecture"] = gguf.KV{Key: "general.architecture", Type: gguf.String, Value: "mamba"}
		}, `general.architecture "mamba" is not supported`},
		{"adapter file", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["general.type"] = gguf.KV{Key: "general.type", Type: gguf.String, Value: "adapter"}
		}, `general.type is "adapter"`},
		{"missing key", func(k map[string]gguf.KV, _ map[string][]int64) { delete(k, "llama.block_count") }, "key llama.block_count is missing"},
		{"key of the wrong type", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["llama.block_count"] = gguf.KV{Key: "llama.block_count", Type: gguf.String, Value: "one"}
		}, "llama.block_count"},
		{"mixture of experts", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["llama.expert_count"] = gguf.KV{Key: "llama.expert_count", Type: gguf.Uint32, Value: uint32(8)}
		}, "mixtures of experts"},
		{"rope scaling", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["llama.rope.scaling.type"] = gguf.KV{Key: "llama.rope.scaling.type", Type: gguf.String, Value: "yarn"}
		}, "RoPE scaling"},
		{"missing tensor", func(_ map[string]gguf.KV, ts map[string][]int64) { delete(ts, "blk.0.ffn_up.weight") }, "tensor blk.0.ffn_up.weight is missing"},
		{"wrong shape", func(_ map[string]gguf.KV, ts map[string][]int64) { ts["blk.0.attn_k.weight"] = []int64{8, 8} }, "tensor blk.0.attn_k.weight has shape [8 8]"},
		{"extra tensor", func(_ map[string]gguf.KV, ts map[string][]int64) { ts["blk.0.attn_sinks.weight"] = []int64{2} }, "blk.0.attn_sinks.weight is not part of the llama model"},
		{"no tokenizer", func(k map[string]gguf.KV, _ map[string][]int64) { delete(k, "tokenizer.ggml.model") }, "tokenizer.ggml.model is missing"},
		{"bad token id", func(k map[string]gguf.KV, _ map[string][]int64) {
			k["tokenizer.ggml.eos_token_id"] = gguf.KV{Key: "tokenizer.ggml.eos_token_id", Type: gguf.Uint32, Value: uint32(99)}
		}, "tokenizer.ggml.eos_token_id is 99"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := ggufFixture(t, c.edit)
			out := filepath.Join(t.TempDir(), "model")
			_, err := Export(path, out)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Export = %v; want a bad-input error naming %s and %q", err, path, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s was left behind", out)
			}
		})
	}
}
