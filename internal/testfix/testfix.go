// Package testfix makes the small fixtures that tests of several packages
// share: tiny random-init model folders and deterministic batches.
package testfix

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/exporters"
)

// TinyModel writes a random tiny model of arch (vocabulary 600) with
// `migu init` and `migu export` into a temporary folder and returns the
// Hugging Face checkpoint folder and the model folder.
func TinyModel(t testing.TB, arch string) (hf, model string) {
	t.Helper()
	root := t.TempDir()
	hf, model = filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: arch, Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := exporters.Export(hf, model); err != nil {
		t.Fatal(err)
	}
	return hf, model
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
