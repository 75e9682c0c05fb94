package eval

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/ort"
)

// writeAdapter saves a LoRA adapter on q and v with random non-zero A and
// B, so that merging changes the scores.
func writeAdapter(t testing.TB, modelDir, out string) {
	t.Helper()
	man, err := modeldir.ReadManifest(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lora.New(lora.Config{R: 4, Alpha: 8})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := a.Layers(man)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	values := map[string][]float32{}
	for _, l := range layers {
		for name, n := range map[string]int64{l.Name + ".lora_A.weight": l.DIn * 4, l.Name + ".lora_B.weight": 4 * l.DOut} {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.2)
			}
			values[name] = v
		}
	}
	if err := a.Save(out, man, values); err != nil {
		t.Fatal(err)
	}
}

// TestAdapterMatchesPEFT scores with --adapter and compares with PEFT's
// merged model in PyTorch; the temporary merged folder goes away on Close.
func TestAdapterMatchesPEFT(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	hf, dir := testfix.TinyModel(t, "llama")
	adapter := filepath.Join(t.TempDir(), "adapter")
	writeAdapter(t, dir, adapter)
	reqs := []Request{{"The cat sat", " on the mat."}, {"Question: why?\nAnswer:", " because"}}
	base, err := Open(dir, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	m, err := Open(dir, Options{Adapter: adapter, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	tmp := m.tmp
	got, err := m.LogLikelihood(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := base.LogLikelihood(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	ref := runReference(t, hf, false, adapter, map[string]any{"batch": 2, "requests": requestPairs(reqs)})
	for i, r := range ref[0].Requests {
		if math.Abs(got[i].LogProb-r[0].(float64)) > tolerance {
			t.Errorf("request %d: %.6f with the adapter, PEFT %.6f", i, got[i].LogProb, r[0])
		}
		if math.Abs(got[i].LogProb-plain[i].LogProb) < 1e-3 {
			t.Errorf("request %d: the adapter did not change the score (%.6f)", i, got[i].LogProb)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("merged copy %s still exists after Close: %v", tmp, err)
	}
	if _, err := m.LogLikelihood(context.Background(), reqs); err == nil {
		t.Error("LogLikelihood after Close succeeded")
	}
}

// TestOpenBadInput checks the model-folder and request errors.
func TestOpenBadInput(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	_, dir := testfix.TinyModel(t, "llama")
	noTok := filepath.Join(t.TempDir(), "notok")
	if err := os.CopyFS(noTok, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(noTok, modeldir.TokenizerFile)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		o    Options
		want string
	}{
		{noTok, Options{}, "no tokenizer.json"},
		{t.TempDir(), Options{}, "no migu.json"},
		{dir, Options{BatchSize: -1}, "must not be negative"},
		{dir, Options{Adapter: filepath.Join(t.TempDir(), "missing")}, "missing"},
	} {
		_, err := Open(tc.dir, tc.o)
		if !badinput.Is(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s, %+v): %v, want bad input saying %q", tc.dir, tc.o, err, tc.want)
		}
	}
	m, err := Open(dir, Options{MaxLength: 8, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, r := range []Request{{"ctx", ""}, {"ctx", strings.Repeat(" word", 40)}} {
		if _, err := m.LogLikelihood(context.Background(), []Request{r}); !badinput.Is(err) {
			t.Errorf("request %q: %v, want bad input", r, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.LogLikelihood(ctx, []Request{{"a", " b"}}); err == nil {
		t.Error("a cancelled context scored")
	}
}

// TestTokenizerMaxLength checks lm-eval's fallback to the tokenizer's
// model_max_length, ignoring transformers' "no limit" sentinel.
func TestTokenizerMaxLength(t *testing.T) {
	for content, want := range map[string]int{
		"":                          0,
		`{"model_max_length": 512}`: 512,
		`{"model_max_length": 1000000000000000019884624838656}`: 0,
		`{"model_max_length": "x"}`:                             0,
		`{}`:                                                    0,
	} {
		dir := t.TempDir()
		if content != "" {
			if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := tokenizerMaxLength(dir); got != want {
			t.Errorf("%s: %d, want %d", content, got, want)
		}
	}
}
