package eval

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// kernelRequests are the requests the kernel comparisons score: contexts
// short and long, continuations of one and several tokens, an empty
// context, and one cut to the model's length.
func kernelRequests() []Request {
	var reqs []Request
	for _, c := range []string{"The cat sat", "Question: what is two plus two?\nAnswer:", strings.Repeat("A man is sitting on a roof and he ", 4)} {
		for _, cont := range []string{" on", " on the mat.", " starts pulling up roofing", " four"} {
			reqs = append(reqs, Request{c, cont})
		}
	}
	return append(reqs, Request{"alone", " here"}, Request{"", " no context"}, Request{strings.Repeat("long ", 40), " cut"})
}

// compareResults wants every result equal to want's to float32 rounding
// (2e-5 relative on the log-likelihood) and its greediness, token count
// and truncation exactly, naming the two sides in errors.
func compareResults(t *testing.T, what string, reqs []Request, got, want []Result, gotName, wantName string) {
	t.Helper()
	worst := 0.0
	for i := range reqs {
		d := math.Abs(got[i].LogProb - want[i].LogProb)
		worst = max(worst, d/max(1, math.Abs(want[i].LogProb)))
		if d > 2e-5*max(1, math.Abs(want[i].LogProb)) || got[i].Greedy != want[i].Greedy || got[i].Tokens != want[i].Tokens || got[i].Truncated != want[i].Truncated {
			t.Errorf("%s, request %d %q: %s %+v, %s %+v", what, i, reqs[i], gotName, got[i], wantName, want[i])
		}
	}
	t.Logf("%s: %d requests, largest relative difference %.2g", what, len(reqs), worst)
}

// TestFusedKernelsMatchStandard opens a model with migu's kernel library
// and without it, and scores the same requests: multiple-choice groups
// that share a context (the cached decoder), requests alone and ones cut
// to the context length (the whole-sequence forward). The fused graphs
// must have fused every RMSNorm, and every log-likelihood must agree with
// the standard graph's to float32 rounding, greediness exactly. The real
// SmolLM2-135M (30 layers, vocabulary 49152) runs when `make smollm2` has
// exported it. Both graphs' scoring log-softmax picks (scoregraph.go) run
// as PickLogSoftmax. On CPUs with AVX-512 every attention is fused
// (ai.migu.Attention) unless Options.UnfusedAttention says otherwise, and
// greedy generation through the cached graphs gives the standard graphs'
// tokens (t5's cached decoder, with its [H, R, S] position bias, runs
// there).
func TestFusedKernelsMatchStandard(t *testing.T) {
	lib := testenv.Kernels(t)
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	reqs := kernelRequests()
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		// norms and attentions are the RMSNorms and attentions in the
		// forward graph (0: a decoder's, two norms per layer and the final
		// one, an attention per layer); act is the fused activation.
		norms, attentions int
		act               string
	}{
		{"tiny llama", func(t *testing.T) string { _, dir := testfix.TinyModel(t, "llama"); return dir }, 0, 0, "SwiGLU"},
		// Two encoder and two decoder blocks: 2·2 + 1 + 2·3 + 1 norms,
		// 2 + 2·2 attentions, a gated GELU per block.
		{"tiny t5", func(t *testing.T) string { _, dir := testfix.TinyModel(t, "t5"); return dir }, 12, 6, "Gelu"},
		{"SmolLM2-135M", func(t *testing.T) string {
			dir := filepath.Join(testenv.Root(), ".deps", "models", "smollm2")
			if _, err := os.Stat(filepath.Join(dir, "migu.json")); err != nil {
				t.Skipf("no exported SmolLM2-135M-Instruct at %s (run `make smollm2`)", dir)
			}
			return dir
		}, 2*30 + 1, 30, "SwiGLU"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.name == "SmolLM2-135M" {
				t.Skip("scores with a 135M-parameter model")
			}
			dir := tc.dir(t)
			score := func(kern string, unshared, unfusedAttention bool) ([]Result, *Model) {
				m, err := Open(dir, Options{BatchSize: 4, Threads: 1, MaxLength: 32, Kernels: kern, Products: ProductsMLAS, UnfusedAttention: unfusedAttention})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				m.unshared = unshared
				res, err := m.LogLikelihood(context.Background(), reqs)
				if err != nil {
					t.Fatal(err)
				}
				return res, m
			}
			want, std := score(kernels.Off, false, false)
			if len(std.fused) != 0 || len(std.gen.fused) != 0 {
				t.Fatalf("with kernels off, %v and %v were fused", std.fused, std.gen.fused)
			}
			norms, attentions := tc.norms, tc.attentions
			if layers := int(std.Manifest().NumLayers); norms == 0 {
				norms, attentions = 2*layers+1, layers
			}
			// Attention is fused on CPUs with AVX-512 (kernels.AttentionFast)
			// unless the options say not to, in the forward graph and the
			// cached graphs alike.
			for _, c := range []struct{ unshared, unfusedAttention bool }{{false, false}, {true, false}, {false, true}} {
				got, m := score(lib, c.unshared, c.unfusedAttention)
				attention := 0
				if kernels.AttentionFast() && !c.unfusedAttention {
					attention = attentions
				}
				// Scoring runs the cached decoder for shared contexts of a
				// decoder-only model; t5's is generation's alone.
				cached := !c.unshared && !m.seq2seq
				if m.fused["Attention"] != attention || cached && m.gen.fused["Attention"] != attention {
					t.Fatalf("fused %d attentions in the forward graph and %d in the cached graphs, want %d", m.fused["Attention"], m.gen.fused["Attention"], attention)
				}
				// Attention's softmax is migu's where the attention is not fused.
				if m.fused["RMSNorm"] != norms || m.fused[tc.act] == 0 || (m.fused["Softmax"] == 0) != (attention > 0) || m.fused["CrossEntropy"] != 1 {
					t.Fatalf("the forward graph fused %v, want %d RMSNorms, %ss, softmaxes or attentions and the scoring's log-softmax pick", m.fused, norms, tc.act)
				}
				if cached && (m.gen.fused["RMSNorm"] != norms || m.gen.fused[tc.act] == 0 || m.gen.fused["CrossEntropy"] != 1) {
					t.Fatalf("the cached graphs fused %v (%v), want %d RMSNorms, %ss and the scoring's log-softmax pick", m.gen.fused, m.gen.err, norms, tc.act)
				}
				compareResults(t, fmt.Sprintf("unshared %v, unfused attention %v", c.unshared, c.unfusedAttention), reqs, got, want, "fused", "standard")
				if c.unshared || c.unfusedAttention {
					continue
				}
				// Greedy generation through the cached graphs: the same tokens.
				prompts := []string{"The cat sat on", "Once upon a time"}
				wantGen, err := std.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8})
				if err != nil {
					t.Fatal(err)
				}
				gotGen, err := m.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8})
				if err != nil {
					t.Fatal(err)
				}
				for i := range prompts {
					if !slices.Equal(gotGen[i].ids, wantGen[i].ids) {
						t.Errorf("prompt %q: fused kernels generated %v, standard %v", prompts[i], gotGen[i].ids, wantGen[i].ids)
					}
				}
				if m.gen.fused["Attention"] != attention {
					t.Errorf("the cached graphs fused %d attentions, want %d", m.gen.fused["Attention"], attention)
				}
			}
		})
	}
}

// TestOneDNNProductsMatchMLAS opens a model with its weight products in
// ORT's MLAS and in oneDNN's float32 matmul (ai.migu.bf16.MatMulF32), the
// fused kernels on both sides, and scores the requests of
// TestFusedKernelsMatchStandard through the cached decoder (shared
// contexts) and the whole-sequence forward, and generates greedily
// through the cached decoder. Every weight product of both graphs — seven
// per layer and the output head — must have moved, every log-likelihood
// must agree with MLAS's to float32 rounding (the same sums in another
// order), greediness exactly, and the generated tokens must be the same.
func TestOneDNNProductsMatchMLAS(t *testing.T) {
	lib := testenv.Kernels(t)
	t.Setenv(kernels.BF16EnvVar, testenv.BF16(t))
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	reqs := kernelRequests()
	prompts := []string{"The cat sat on", "Once upon a time"}
	cases := []struct {
		name  string
		dir   func(t *testing.T) string
		large bool
	}{
		{"tiny llama", func(t *testing.T) string { _, dir := testfix.TinyModel(t, "llama"); return dir }, false},
		{"SmolLM2-135M", func(t *testing.T) string {
			dir := filepath.Join(testenv.Root(), ".deps", "models", "smollm2")
			if _, err := os.Stat(filepath.Join(dir, "migu.json")); err != nil {
				t.Skipf("no exported SmolLM2-135M-Instruct at %s (run `make smollm2`)", dir)
			}
			return dir
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.large {
				t.Skip("scores with a 135M-parameter model")
			}
			dir := tc.dir(t)
			open := func(products string) *Model {
				m, err := Open(dir, Options{BatchSize: 4, Threads: 1, MaxLength: 32, Kernels: lib, Products: products})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			}
			mlas, onednn := open(ProductsMLAS), open(ProductsOneDNN)
			products := 7*int(mlas.Manifest().NumLayers) + 1
			for _, unshared := range []bool{false, true} {
				mlas.unshared, onednn.unshared = unshared, unshared
				want, err := mlas.LogLikelihood(context.Background(), reqs)
				if err != nil {
					t.Fatal(err)
				}
				got, err := onednn.LogLikelihood(context.Background(), reqs)
				if err != nil {
					t.Fatal(err)
				}
				compareResults(t, fmt.Sprintf("unshared %v", unshared), reqs, got, want, "oneDNN", "MLAS")
			}
			wantGen, err := mlas.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8})
			if err != nil {
				t.Fatal(err)
			}
			gotGen, err := onednn.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8})
			if err != nil {
				t.Fatal(err)
			}
			for i := range prompts {
				if !slices.Equal(gotGen[i].ids, wantGen[i].ids) {
					t.Errorf("prompt %q: oneDNN generated %v, MLAS %v", prompts[i], gotGen[i].ids, wantGen[i].ids)
				}
			}
			if mlas.fused[oneDNNProducts] != 0 || mlas.gen.fused[oneDNNProducts] != 0 {
				t.Fatalf("with products mlas, %d and %d products moved to oneDNN", mlas.fused[oneDNNProducts], mlas.gen.fused[oneDNNProducts])
			}
			if onednn.fused[oneDNNProducts] != products || onednn.gen.fused[oneDNNProducts] != products {
				t.Fatalf("oneDNN runs %d products of the forward graph and %d of the cached decoder, want %d each (7 per layer and the head)", onednn.fused[oneDNNProducts], onednn.gen.fused[oneDNNProducts], products)
			}
		})
	}
}

// TestProductsSetting checks Options.Products: a setting that is not
// auto, mlas or onednn, and onednn on another provider, are bad input
// naming the setting; auto and mlas load no library even where the bf16
// library is found; onednn loads it.
func TestProductsSetting(t *testing.T) {
	for _, tc := range []struct {
		o       Options
		wantErr bool
	}{
		{Options{Products: "fast"}, true},
		{Options{Products: ProductsOneDNN, Provider: ort.ProviderCUDA}, true},
		{Options{Products: ProductsAuto, Provider: ort.ProviderCUDA}, false},
	} {
		lib, err := productsLibrary(tc.o)
		if tc.wantErr {
			if !badinput.Is(err) || !slices.Contains(badinput.Settings(err), "products") {
				t.Errorf("%+v: error %v, want bad input naming the products setting", tc.o, err)
			}
			continue
		}
		if err != nil || lib != "" {
			t.Errorf("%+v: library %q, error %v; want none", tc.o, lib, err)
		}
	}
	t.Setenv(kernels.BF16EnvVar, testenv.BF16(t))
	for _, p := range []string{"", ProductsAuto, ProductsMLAS} {
		if lib, err := productsLibrary(Options{Products: p}); err != nil || lib != "" {
			t.Errorf("products %q with the bf16 library found: library %q, error %v; want MLAS", p, lib, err)
		}
	}
	if lib, err := productsLibrary(Options{Products: ProductsOneDNN}); err != nil || lib == "" {
		t.Errorf("products onednn with the bf16 library found: library %q, error %v", lib, err)
	}
}
