package exporters

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
)

// migu.json names each stack's block boundaries, and every linear layer of
// block k lies between boundary k and boundary k+1: upstream of the one and
// not of the other (T5's cross-attention keys and values read the encoder,
// not boundary k, so downstream of boundary k would be too strong).
func TestManifestBlockBoundaries(t *testing.T) {
	cases := []struct {
		arch   string
		stacks []string
	}{
		{"llama", []string{""}},
		{"roberta", []string{""}},
		{"t5", []string{"encoder", "decoder"}},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			_, dir := tinyFolder(t, c.arch)
			man, err := modeldir.ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if len(man.Blocks) != len(c.stacks) {
				t.Fatalf("%d block stacks, want %d", len(man.Blocks), len(c.stacks))
			}
			producers := m.Graph().Producers()
			for i, s := range man.Blocks {
				if s.Stack != c.stacks[i] {
					t.Errorf("stack %d is %q, want %q", i, s.Stack, c.stacks[i])
				}
				for _, l := range man.Linears {
					if l.Stack != s.Stack || l.Block < 0 {
						continue
					}
					from, to := s.Residuals[l.Block], s.Residuals[l.Block+1]
					if reaches(producers, l.Output, from) || !reaches(producers, l.Output, to) {
						t.Errorf("%s (block %d) is not between %s and %s", l.Name, l.Block, from, to)
					}
				}
			}
		})
	}
}

// reaches reports whether value from is an ancestor of (or is) value to.
func reaches(producers map[string]*onnxpb.NodeProto, from, to string) bool {
	seen := map[string]bool{}
	stack := []string{to}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if v == from {
			return true
		}
		if seen[v] {
			continue
		}
		seen[v] = true
		if n := producers[v]; n != nil {
			stack = append(stack, n.Input...)
		}
	}
	return false
}
