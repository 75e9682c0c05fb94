package kernels

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// Fusion is one graph rewrite: it replaces the standard-op formulation of
// a fused kernel by the kernel's node and returns how many it replaced.
type Fusion func(*onnx.Model, Types) (int, error)

// forwardFusions are the rewrites Fuse applies, in order. A new fused
// forward kernel adds its rewrite here and every forward graph (eval's
// scoring and key/value-cache sessions) picks it up.
var forwardFusions = []struct {
	name string
	fuse Fusion
}{
	{"RMSNorm", FuseRMSNorm},
}

// Fuse applies every fusion a forward (inference) graph can use and
// returns the number of nodes fused. types describes m as it was before
// the call (shapes.Infer); a rewrite only reads the types of values that
// were already in the graph, so one inference serves them all. The
// ai.migu domain is imported when anything was fused.
func Fuse(m *onnx.Model, types Types) (int, error) {
	total := 0
	for _, f := range forwardFusions {
		n, err := f.fuse(m, types)
		if err != nil {
			return total, fmt.Errorf("fusing %s: %w", f.name, err)
		}
		total += n
	}
	return total, nil
}
