package eval

import (
	"fmt"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// Scoring and generation run their forward graphs with migu's fused
// kernels (package onnx/kernels) when the library is found, as training
// does: the graph is rewritten in memory by kernels.Fuse and the library
// is registered into the session. The fused graph computes the same
// numbers to float32 rounding (kernels_test.go compares the two).

// kernelLibrary resolves Options.Kernels (and $MIGU_KERNELS when it is
// empty) to the library to load, "" for none. The kernels are CPU
// kernels: another provider runs the standard graph.
func kernelLibrary(o Options) (string, error) {
	if o.Provider != "" && o.Provider != ort.ProviderCPU {
		return "", nil
	}
	if o.Kernels == "" {
		return kernels.Find()
	}
	return kernels.Resolve(o.Kernels)
}

// fuse rewrites m with every fusion (kernels.Fuse) and returns how many
// subgraphs of each kind it fused. Types come from lenient inference, so
// an op without a shape rule leaves the subgraphs after it as they are
// rather than failing.
func fuse(m *onnx.Model) (map[string]int, error) {
	info, err := shapes.InferWith(m, shapes.Options{Lenient: true})
	if err != nil {
		return nil, err
	}
	return kernels.Fuse(m, info)
}

// forwardModel reads the forward graph of dir, adds the scoring inputs
// and outputs (addScoring) and, with withKernels, fuses it. It returns the
// serialized graph and what was fused. The graph still refers to the
// weights in dir's data files, which ORT reads from there
// (ort.SessionOptions.ExternalDataDir), so the rewrite copies no weights.
func forwardModel(dir string, withKernels bool) ([]byte, map[string]int, error) {
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	if err := addScoring(m, true); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	var counts map[string]int
	if withKernels {
		if counts, err = fuse(m); err != nil {
			return nil, nil, err
		}
	}
	raw, err := proto.Marshal(m.Proto)
	if err != nil {
		return nil, nil, fmt.Errorf("serializing the forward graph: %w", err)
	}
	return raw, counts, nil
}
