package lora

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// BenchmarkInjectMerge measures, on the small Llama preset, injecting LoRA
// into the forward graph, folding a loaded adapter into the weights in
// memory, and `migu merge`'s whole folder-to-folder path, for the default
// targets (q, v) and for every linear.
func BenchmarkInjectMerge(b *testing.B) {
	_, dir, man := testfix.PresetModel(b, "llama", exporters.InitOptions{Preset: "small"})
	load := func() *onnx.Model {
		m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	for _, targets := range [][]string{{"q", "v"}, {AllLinear}} {
		a, err := New(defaulted(Config{Targets: targets}))
		if err != nil {
			b.Fatal(err)
		}
		m := load()
		inj, err := a.Inject(m, man, adapters.InjectOptions{Seed: 1})
		m.Close()
		if err != nil {
			b.Fatal(err)
		}
		ad := filepath.Join(b.TempDir(), fmt.Sprint(targets))
		if err := a.Save(ad, man, randomValues(inj, 1)); err != nil {
			b.Fatal(err)
		}
		loaded, err := Load(ad)
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("%s/%d_layers", strings.Join(targets, ","), len(inj.Params)/2)
		b.Run("Inject/"+name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				m := load()
				b.StartTimer()
				if _, err := a.Inject(m, man, adapters.InjectOptions{Seed: 1}); err != nil {
					b.Fatal(err)
				}
				m.Close()
			}
		})
		b.Run("Merge/"+name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				m := load()
				b.StartTimer()
				if err := loaded.Merge(m, man); err != nil {
					b.Fatal(err)
				}
				m.Close()
			}
		})
		b.Run("MergeDir/"+name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				if _, err := adapters.Merge(dir, ad, filepath.Join(b.TempDir(), fmt.Sprint("out", i))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
