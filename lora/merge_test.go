package lora

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// savedAdapter saves a LoRA adapter with trained-looking values for dir's
// model and returns its folder.
func savedAdapter(t *testing.T, dir string, man *modeldir.Manifest, cfg Config, seed uint64) string {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: seed})
	out := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(out, man, randomValues(inj, seed)); err != nil {
		t.Fatal(err)
	}
	return out
}

// The merged model alone gives the logits of the base model with the
// adapter, tied heads included (they are untied, the embedding intact);
// every other file is copied unchanged.
func TestMerge(t *testing.T) {
	cases := []struct {
		arch    string
		targets []string
	}{
		{"llama", []string{"q", "v"}},
		{"t5", []string{"q", "ffn_out", "head"}},
		{"roberta", []string{AllLinear, "head"}},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			ac := archCases[c.arch]
			_, dir, man := model(t, c.arch)
			ad := savedAdapter(t, dir, man, defaulted(Config{Targets: c.targets}), 21)
			loaded, err := Load(ad)
			if err != nil {
				t.Fatal(err)
			}
			path, _ := injected(t, dir, man, loaded, adapters.InjectOptions{})
			want := run(t, path, ac.forwardFeeds(), nil)["logits"]
			base := run(t, filepath.Join(dir, modeldir.ModelFile), ac.forwardFeeds(), nil)["logits"]

			out := filepath.Join(t.TempDir(), "merged")
			res, err := adapters.Merge(dir, ad, out)
			if err != nil {
				t.Fatal(err)
			}
			got := run(t, filepath.Join(out, modeldir.ModelFile), ac.forwardFeeds(), nil)["logits"]
			d := maxAbsDiff(got, want)
			if d > 1e-5 {
				t.Errorf("merged logits: max |Δ| = %.3g from base + adapter", d)
			}
			t.Logf("%d layers merged: max |Δ| = %.3g from base + adapter (the adapter moves logits by %.3g)", len(res.Layers), d, maxAbsDiff(want, base))
			if maxAbsDiff(want, base) < 1e-2 {
				t.Errorf("the adapter barely changes the logits (%.3g); the test proves nothing", maxAbsDiff(want, base))
			}
			for _, name := range []string{modeldir.ConfigFile, modeldir.TokenizerFile} {
				x, _ := os.ReadFile(filepath.Join(dir, name))
				y, err := os.ReadFile(filepath.Join(out, name))
				if err != nil || !bytes.Equal(x, y) {
					t.Errorf("%s not copied unchanged: %v", name, err)
				}
			}
			merged, err := modeldir.ReadManifest(out)
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range merged.Linears {
				orig := man.Linears[i]
				if orig.Tied != "" && slices.Contains(res.Layers, orig.Name) {
					if l.Tied != "" || l.Weight == orig.Weight {
						t.Errorf("merged tied head %s: weight %q tied %q; want its own weight", l.Name, l.Weight, l.Tied)
					}
					orig.Weight, orig.Tied = l.Weight, ""
				}
				if l != orig {
					t.Errorf("manifest entry %s changed: %+v", l.Name, l)
				}
			}
			entries, _ := os.ReadDir(filepath.Dir(out))
			if len(entries) != 1 {
				t.Errorf("merge left %d entries beside the output folder", len(entries))
			}
		})
	}
}

// Merge refuses, with bad input and no output folder, an adapter of
// another model and an output folder already in use.
func TestMergeErrors(t *testing.T) {
	_, dir, man := model(t, "llama")
	_, t5dir, t5man := model(t, "t5")
	ad := savedAdapter(t, dir, man, defaulted(Config{}), 1)
	t5ad := savedAdapter(t, t5dir, t5man, defaulted(Config{}), 1)
	busy := t.TempDir()
	os.WriteFile(filepath.Join(busy, "x"), nil, 0o644)
	cases := []struct {
		name, model, adapter, out, want string
	}{
		{"adapter of another model", dir, t5ad, filepath.Join(t.TempDir(), "out"), "base_model.model.decoder.block.0.layer.0.SelfAttention.q.lora_A.weight"},
		{"output in use", dir, ad, busy, "already exists and is not empty"},
		{"output is the model", dir, ad, dir, "is the model folder itself"},
		{"not an adapter", dir, dir, filepath.Join(t.TempDir(), "out"), "no adapter_config.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapters.Merge(c.model, c.adapter, c.out)
			if !badinput.Is(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want bad input containing %q", err, c.want)
			}
			if c.out != busy && c.out != dir {
				if _, err := os.Stat(c.out); !os.IsNotExist(err) {
					t.Errorf("%s exists after a failed merge", c.out)
				}
			}
		})
	}
}
