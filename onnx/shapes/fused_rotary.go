package shapes

import "github.com/migu-ml/migu/onnx"

// Shape rules of the fused rotary embedding (onnx/kernels FuseRotary): Y
// and dX have the shape of the first input.
func init() {
	registerShape(inferSameAs(0), onnx.DomainMigu+".Rotary", onnx.DomainMigu+".RotaryGrad")
}
