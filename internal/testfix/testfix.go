// Package testfix makes the small fixtures that tests of several packages
// share: tiny random-init model folders and deterministic batches.
package testfix

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/ort"
)

// TinyModel writes a random tiny model of arch (vocabulary 600) with
// `migu init` and `migu export` into a temporary folder and returns the
// Hugging Face checkpoint folder and the model folder.
func TinyModel(t testing.TB, arch string) (hf, model string) {
	t.Helper()
	hf, model, _ = PresetModel(t, arch, exporters.InitOptions{Preset: "tiny", VocabSize: 600})
	return hf, model
}

// PresetModel writes a random model of arch as opt says (`migu init`'s
// preset, vocabulary, seed) and exports it, in a temporary folder; it
// returns the checkpoint folder, the model folder and its manifest. The
// benchmarks use it for the small preset.
func PresetModel(t testing.TB, arch string, opt exporters.InitOptions) (hf, model string, man *modeldir.Manifest) {
	t.Helper()
	root := t.TempDir()
	hf, model = filepath.Join(root, "hf"), filepath.Join(root, "model")
	opt.Arch = arch
	if _, err := exporters.Init(hf, opt); err != nil {
		t.Fatal(err)
	}
	man, err := exporters.Export(hf, model)
	if err != nil {
		t.Fatal(err)
	}
	return hf, model, man
}

// RandomBatches makes deterministic causal-LM batches: random ids, the
// second row right-padded, labels = ids with IgnoreIndex at padding.
func RandomBatches(n, size, seq int, vocab int64, seed uint64) []*data.Batch {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]*data.Batch, n)
	for k := range out {
		b := &data.Batch{Objective: data.CLM, Size: size, SeqLen: seq}
		for r := 0; r < size; r++ {
			length := seq
			if r == 1 {
				length = seq - 1 - rng.IntN(seq/2)
			}
			for s := 0; s < seq; s++ {
				id, m, l := int64(0), int64(0), int64(data.IgnoreIndex)
				if s < length {
					id = 3 + rng.Int64N(vocab-3)
					m, l = 1, id
					b.Tokens++
				}
				b.InputIDs = append(b.InputIDs, id)
				b.AttentionMask = append(b.AttentionMask, m)
				b.Labels = append(b.Labels, l)
			}
		}
		out[k] = b
	}
	return out
}

// Rows splits a row-major [size, seq] slice into rows, for JSON.
func Rows(v []int64, size, seq int) [][]int64 {
	out := make([][]int64, size)
	for r := range out {
		out[r] = v[r*seq : (r+1)*seq]
	}
	return out
}

// BatchFeeds gives a causal-LM batch as the JSON rows a PyTorch script
// takes.
func BatchFeeds(b *data.Batch) map[string][][]int64 {
	return map[string][][]int64{"input_ids": Rows(b.InputIDs, b.Size, b.SeqLen),
		"attention_mask": Rows(b.AttentionMask, b.Size, b.SeqLen), "labels": Rows(b.Labels, b.Size, b.SeqLen)}
}

// Logits runs a model folder's forward graph in ONNX Runtime on one row of
// ids (attention everywhere) and returns its logits, [len(ids), vocab].
func Logits(t testing.TB, dir string, ids []int64) []float32 {
	t.Helper()
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(filepath.Join(dir, modeldir.ModelFile), ort.SessionOptions{Outputs: []string{"logits"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mask := make([]int64, len(ids))
	for i := range mask {
		mask[i] = 1
	}
	in := map[string]ort.Value{}
	for name, v := range map[string][]int64{"input_ids": ids, "attention_mask": mask} {
		tv, err := ort.NewTensor(v, 1, int64(len(v)))
		if err != nil {
			t.Fatal(err)
		}
		defer tv.Close()
		in[name] = tv
	}
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Close()
	return append([]float32(nil), outs[0].(*ort.Tensor[float32]).Data()...)
}

// ReadFloat32s reads a file of little-endian float32 values, as the
// reference scripts write logits.
func ReadFloat32s(t testing.TB, path string) []float32 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}
