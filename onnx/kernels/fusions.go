package kernels

import (
	"fmt"

	"github.com/migu-ml/migu/onnx"
)

// LibVersion is the op set this Go code expects of the kernel library:
// MiguKernelsVersion in csrc/migu_kernels.c returns the same string, and
// both change together whenever an op is added, removed or changes its
// inputs, outputs or attributes. Resolve refuses a library that reports
// another version (a stale bin/libmigu_kernels.so) rather than letting ORT
// fail later on an op it lacks. Version 1 was RMSNorm alone; 2 adds
// AbsColSum, the loss, softmax, rotary, activation and LayerNorm ops; 3
// SwiGLUTaps and GeluTaps (FuseActivationTaps); 4 ScatterAddRows
// (FuseScatterAdd); 5 the optional Residual of RMSNormGrad and
// LayerNormGrad (FuseResidualGrads); 6 Softmax's optional Bias
// (FuseSoftmaxBias); 7 AddN (FuseSums); 8 Attention and AttentionGrad
// (FuseAttention); 9 the optional gate U of Gelu, GeluGrad and GeluTaps
// (FuseGelu) and Attention's Bias of rank 1 to 4.
const LibVersion = "9"

// fusions are the rewrites Fuse applies, in order, named as the counts it
// returns. A new fused kernel adds its rewrite here, and every graph migu
// builds with the kernels — training graphs and evaluation's forward and
// key/value-cache graphs — picks it up.
var fusions = []struct {
	name string
	fuse func(*onnx.Model, Types) (int, error)
}{
	{"RMSNorm", FuseRMSNorm},
	{"LayerNorm", FuseLayerNorm},
	{"SwiGLU", FuseSwiGLU},
	{"Gelu", FuseGelu},
	{"Rotary", FuseRotary},
	{"Softmax", FuseSoftmax},
	{"CrossEntropy", FuseCrossEntropy},
}

// Fuse rewrites every standard-op formulation in m that a fused kernel
// replaces, imports the ai.migu domain, and returns how many of each it
// rewrote (fusions with none are left out). types describes m as it was
// before the call (shapes.Infer): each rewrite reads only the types of
// values that were in the graph already, so one inference serves them all.
func Fuse(m *onnx.Model, types Types) (map[string]int, error) {
	counts := map[string]int{}
	for _, f := range fusions {
		n, err := f.fuse(m, types)
		if err != nil {
			return counts, fmt.Errorf("fusing %s: %w", f.name, err)
		}
		if n > 0 {
			counts[f.name] = n
		}
	}
	m.SetOpset(onnx.DomainMigu, Opset)
	return counts, nil
}
