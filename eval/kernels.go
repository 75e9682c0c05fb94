package eval

import (
	"fmt"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/badinput"
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
//
// The weight products can run in oneDNN's float32 matmul
// (ai.migu.bf16.MatMulF32, kernels.RewriteF32), as training's forward
// products do under train's --products auto (Options.Products
// ProductsOneDNN); the products are the same float32 sums in another
// order. Unlike training's, evaluation's auto keeps ORT's MLAS: on
// SmolLM2-135M on Ice Lake-SP (a CPU kernels.AutoOneDNN picks),
// passes paired in one process (benchmarks/perf -worker eval-pair, 8
// items × 4 continuations, batch 8), oneDNN took 10 % more CPU time than
// MLAS in shared-context scoring on 1 and on 2 threads (the key/value-cache
// decoder's runs are small: a few rows of up to ~20 positions, or a few
// hundred positions of contexts) and the same time (−0.6 % on 1 thread,
// +0.5 % on 2) in whole-request scoring (~1500 positions per run), where
// training's 512-position products gained ~9 %.

// Where the float32 products of the evaluation graphs run
// (Options.Products), as train's --products settings.
const (
	// ProductsAuto runs every product in MLAS, which was as fast or
	// faster on every CPU measured (see above).
	ProductsAuto = "auto"
	// ProductsMLAS runs every product in ORT's MLAS.
	ProductsMLAS = "mlas"
	// ProductsOneDNN runs the weight products of every graph in oneDNN on
	// any CPU; it needs the bf16 library.
	ProductsOneDNN = "onednn"
)

// kernelLibrary resolves Options.Kernels (and $MIGU_KERNELS when it is
// empty) to the library to load, "" for none. The kernels are CPU
// kernels: another provider runs the standard graph.
func kernelLibrary(o Options) (string, error) {
	if !cpuProvider(o) {
		return "", nil
	}
	if o.Kernels == "" {
		return kernels.Find()
	}
	return kernels.Resolve(o.Kernels)
}

func cpuProvider(o Options) bool { return o.Provider == "" || o.Provider == ort.ProviderCPU }

// productsLibrary resolves Options.Products to the bf16 library whose
// MatMulF32 runs the weight products, "" for MLAS. Asked for explicitly,
// oneDNN needs the CPU provider and the library, or it is an error naming
// the setting.
func productsLibrary(o Options) (string, error) {
	switch o.Products {
	case "", ProductsAuto, ProductsMLAS:
		return "", nil
	case ProductsOneDNN:
		if !cpuProvider(o) {
			return "", badinput.Errorf("%v onednn runs on the CPU provider only; use mlas (or auto) with %s", badinput.Setting("products"), o.Provider)
		}
		lib, err := kernels.FindBF16()
		if err == nil && lib == "" {
			err = badinput.Errorf("%v onednn needs %s, which `make build` builds where oneDNN is installed (apt-get install libdnnl-dev), or $%s naming it; none was found", badinput.Setting("products"), kernels.BF16LibName, kernels.BF16EnvVar)
		}
		return lib, err
	}
	return "", badinput.Errorf("%v %q is not one of auto, mlas, onednn", badinput.Setting("products"), o.Products)
}

// rewrites are the in-memory rewrites of an evaluation graph: the fused
// kernels, attention among them (kernels.FuseAttention, on CPUs where it
// is fast), and the weight products in oneDNN.
type rewrites struct {
	kernels, attention, oneDNN bool
}

// oneDNNProducts is the key under which rewrite counts the products it
// moved to oneDNN, biasedProducts those that add a linear layer's bias
// (kernels.FuseProductBias).
const (
	oneDNNProducts = "MatMulF32"
	biasedProducts = "MatMulF32 bias"
)

// rewrite applies r to m and returns how many subgraphs of each kind it
// replaced: the fusions' counts (kernels.Fuse; "Attention" for
// kernels.FuseAttention) and, under
// oneDNNProducts, the products moved to oneDNN (the forward products of
// kernels.RewriteF32: MatMul of float32 activations by a 2-D matrix),
// under biasedProducts those of them that add their bias.
// Types come from lenient inference, so an op without a shape rule
// leaves the nodes after it as they are rather than failing.
func rewrite(m *onnx.Model, r rewrites) (map[string]int, error) {
	if !r.kernels && !r.oneDNN {
		return nil, nil
	}
	info, err := shapes.InferWith(m, shapes.Options{Lenient: true})
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	if r.oneDNN {
		// Before the fusions, which leave MatMul nodes and the values
		// they read as they are, so one inference serves both.
		if n := kernels.RewriteF32(m, info, kernels.F32Roles{Forward: true}); n > 0 {
			counts[oneDNNProducts] = n
		}
	}
	if r.attention {
		// Before Fuse, whose softmax fusion would take the attention's.
		n, err := kernels.FuseAttention(m, info)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			counts["Attention"] = n
		}
	}
	if r.kernels {
		fused, err := kernels.Fuse(m, info)
		if err != nil {
			return nil, err
		}
		for k, n := range fused {
			counts[k] += n
		}
		if n := kernels.FuseSoftmaxBias(m, info); n > 0 {
			counts["SoftmaxBias"] = n
		}
	}
	if r.oneDNN {
		// The products' outputs and the biases keep their names and types
		// through the rewrites above.
		if n := kernels.FuseProductBias(m, info); n > 0 {
			counts[biasedProducts] = n
		}
	}
	return counts, nil
}

// forwardModel reads the forward graph of dir, adds the scoring inputs
// and outputs (addScoring) and applies r. It returns the serialized graph
// and what was rewritten. The graph still refers to the weights in dir's
// data files, which ORT reads from there
// (ort.SessionOptions.ExternalDataDir), so the rewrite copies no weights.
func forwardModel(dir string, r rewrites) ([]byte, map[string]int, error) {
	m, err := onnx.Load(filepath.Join(dir, modeldir.ModelFile))
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	if err := addScoring(m, true); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	counts, err := rewrite(m, r)
	if err != nil {
		return nil, nil, err
	}
	raw, err := proto.Marshal(m.Proto)
	if err != nil {
		return nil, nil, fmt.Errorf("serializing the forward graph: %w", err)
	}
	return raw, counts, nil
}
