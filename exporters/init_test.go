package exporters

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/safetensors"
)

// The real-shape presets have their models' exact parameter counts (the
// figures Hugging Face reports for TinyLlama-1.1B and Llama-2-7B), checked
// on the config and tensor list Init would write, without writing them.
func TestPresetParameterCounts(t *testing.T) {
	cases := []struct {
		arch, preset string
		dtype        string
		params       int64
		vocab        int
		torch        string
		shape        map[string]float64 // config.json fields
	}{
		{"llama", "1b", "", 1_100_048_384, 32000, "bfloat16", map[string]float64{"hidden_size": 2048, "num_hidden_layers": 22,
			"num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632, "max_position_embeddings": 2048,
			"rms_norm_eps": 1e-5, "rope_theta": 10000}},
		{"llama", "7b", "f16", 6_738_415_616, 32000, "float16", map[string]float64{"hidden_size": 4096, "num_hidden_layers": 32,
			"num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008, "max_position_embeddings": 4096,
			"rms_norm_eps": 1e-5, "rope_theta": 10000}},
		{"llama", "small", "", 0, 0, "float32", map[string]float64{"hidden_size": 512}},
	}
	for _, c := range cases {
		t.Run(c.arch+"/"+c.preset, func(t *testing.T) {
			p, err := planInit(InitOptions{Arch: c.arch, Preset: c.preset, DType: c.dtype})
			if err != nil {
				t.Fatal(err)
			}
			if got := Parameters(p.specs); c.params != 0 && got != c.params {
				t.Errorf("%d parameters, want %d", got, c.params)
			}
			var cfg map[string]any
			if err := json.Unmarshal(p.config, &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["torch_dtype"] != c.torch {
				t.Errorf("torch_dtype %v, want %s", cfg["torch_dtype"], c.torch)
			}
			if cfg["tie_word_embeddings"] != false {
				t.Errorf("tie_word_embeddings %v, want false", cfg["tie_word_embeddings"])
			}
			for k, want := range c.shape {
				if cfg[k] != want {
					t.Errorf("%s = %v, want %v", k, cfg[k], want)
				}
			}
			if c.vocab != 0 {
				// The table keeps the real size; the tokenizer fits inside it.
				if p.table != c.vocab || cfg["vocab_size"] != float64(c.vocab) {
					t.Errorf("vocab_size %v (table %d), want %d", cfg["vocab_size"], p.table, c.vocab)
				}
				if n := p.tok.VocabSize(); n > c.vocab || n < 1000 {
					t.Errorf("tokenizer of %d ids, want 1000..%d", n, c.vocab)
				}
			} else if p.table != p.tok.VocabSize() {
				t.Errorf("table %d rows, tokenizer %d ids: only the real-shape presets pad", p.table, p.tok.VocabSize())
			}
		})
	}
}

func TestInitRefuses(t *testing.T) {
	cases := []struct {
		opt  InitOptions
		want string
	}{
		{InitOptions{Arch: "t5", Preset: "1b"}, `t5 has no preset "1b" (presets: tiny, small)`},
		{InitOptions{Arch: "roberta", Preset: "7b"}, `roberta has no preset "7b" (presets: tiny, small)`},
		{InitOptions{Arch: "llama", Preset: "13b"}, `llama has no preset "13b" (presets: tiny, small, 1b, 7b)`},
		{InitOptions{Arch: "llama", Preset: "tiny", DType: "fp8"}, `unknown dtype "fp8" (f32, f16, bf16)`},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "hf")
			_, err := Init(out, c.opt)
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want a bad-input error containing %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a refused init left %s behind", out)
			}
		})
	}
}

// Writing a preset in f16 or bf16 gives the f32 run's values rounded to
// nearest even, every tensor in that dtype, and a config that says so; the
// file does not depend on the number of cores that filled it.
func TestInitDType(t *testing.T) {
	// Chunks much smaller than the tensors, so that many of them are in
	// flight and must reach the file in order.
	defer func(n int64) { fillChunk = n }(fillChunk)
	fillChunk = 1000
	dir := t.TempDir()
	base := InitOptions{Arch: "llama", Preset: "tiny", Seed: 3, VocabSize: 600}
	write := func(name, dtype string) *safetensors.File {
		t.Helper()
		opt := base
		opt.DType = dtype
		out := filepath.Join(dir, name)
		res, err := Init(out, opt)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]safetensors.DType{"f32": safetensors.F32, "f16": safetensors.F16, "bf16": safetensors.BF16}[dtype]; res.DType != want {
			t.Errorf("%s: result says %s", name, res.DType)
		}
		f, err := safetensors.Open(filepath.Join(out, safetensors.SingleFile))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	ref := write("f32", "f32")
	cases := []struct {
		dtype string
		st    safetensors.DType
		torch string
		round func(float32) uint16
	}{
		{"bf16", safetensors.BF16, "bfloat16", half.F32ToBF16},
		{"f16", safetensors.F16, "float16", half.F32ToF16},
	}
	for _, c := range cases {
		t.Run(c.dtype, func(t *testing.T) {
			f := write(c.dtype, c.dtype)
			if len(f.Names()) != len(ref.Names()) {
				t.Fatalf("%d tensors, f32 has %d", len(f.Names()), len(ref.Names()))
			}
			for _, name := range ref.Names() {
				info, err := f.Info(name)
				if err != nil {
					t.Fatal(err)
				}
				if info.DType != c.st {
					t.Errorf("%s is %s, want %s", name, info.DType, c.st)
				}
				want, err := ref.Float32(name)
				if err != nil {
					t.Fatal(err)
				}
				raw, err := f.Bytes(name)
				if err != nil {
					t.Fatal(err)
				}
				for i, v := range want {
					if got := uint16(raw[2*i]) | uint16(raw[2*i+1])<<8; got != c.round(v) {
						t.Fatalf("%s[%d] = %#04x, want %#04x (%v rounded)", name, i, got, c.round(v), v)
					}
				}
			}
			raw, err := os.ReadFile(filepath.Join(dir, c.dtype, modeldir.ConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			var cfg map[string]any
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["torch_dtype"] != c.torch {
				t.Errorf("torch_dtype %v, want %s", cfg["torch_dtype"], c.torch)
			}
		})
	}

	// The normal draws look like N(0, 0.02²).
	emb, err := ref.Float32("model.embed_tokens.weight")
	if err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	for _, v := range emb {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean, std := sum/float64(len(emb)), math.Sqrt(sq/float64(len(emb)))
	if math.Abs(mean) > 1e-3 || math.Abs(std-0.02) > 1e-3 {
		t.Errorf("embedding mean %.2g std %.4g, want about 0 and 0.02", mean, std)
	}

	prev := runtime.GOMAXPROCS(1)
	one := write("one-core", "f32")
	runtime.GOMAXPROCS(prev)
	for _, name := range ref.Names() {
		a, _ := ref.Bytes(name)
		b, _ := one.Bytes(name)
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between %d cores and one", name, prev)
		}
	}
}
