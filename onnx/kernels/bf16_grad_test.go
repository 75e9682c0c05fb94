package kernels_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/half"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/grad"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/onnx/shapes"
)

// bf16 rounds to bfloat16 and back, in float64.
func bf16(v float32) float64 { return float64(half.BF16ToF32(half.F32ToBF16(v))) }

// A linear layer y = x·W written in standard operators, as the exporters
// write it (W stored [k, n]; stored [n, k] behind a Transpose, as a tied
// head; stored in bfloat16 behind a Cast, as a frozen weight of a bf16
// model folder), rewritten by RewriteBF16 and differentiated: the loss
// Σ y ⊙ r gives dx = r·Wᵀ and dW = xᵀ·r, and in the bf16 graph every one
// of the three products rounds its operands to bfloat16. Each output must
// be within float32 accumulation's bound (k·u·Σ|ab|) of the float64
// product of the rounded operands — which checks the gradient rule's
// operands, transposes and flattening of the 3-D x — and the rewrite must
// leave no MatMul, Gemm, Transpose or Cast behind.
func TestRewriteBF16Gradients(t *testing.T) {
	lib := withBF16(t)
	const b, s, k, n = 2, 5, 40, 300 // n above one 256-column block
	for _, c := range []struct{ storage, path string }{
		{"kn", "native"}, {"kn", "f32"}, {"nk-transposed", "native"}, {"nk-transposed", "f32"}, {"bf16-cast", "native"}, {"bf16-cast", "f32"},
	} {
		storage := c.storage
		t.Run(storage+"/"+c.path, func(t *testing.T) {
			t.Setenv("MIGU_BF16_PATH", c.path)
			rng := rand.New(rand.NewPCG(7, uint64(len(storage))))
			x, r := gaussian(rng, b*s*k), gaussian(rng, b*s*n)
			wv := gaussian(rng, k*n) // W[k][n] row-major
			m := onnx.New("linear", nil)
			g := m.Graph()
			g.AddInput("x", onnx.Float, dimsOf([]int64{b, s, k}))
			wrt := []string{"x"}
			var w, wName string
			switch storage {
			case "kn":
				wName = "w"
				g.AddInput(wName, onnx.Float, dimsOf([]int64{k, n}))
				w, wrt = wName, append(wrt, wName)
			case "nk-transposed":
				wName = "wt"
				g.AddInput(wName, onnx.Float, dimsOf([]int64{n, k}))
				w, wrt = g.Op("Transpose", []string{wName}, "w", onnx.AttrInts("perm", 1, 0)), append(wrt, wName)
			case "bf16-cast":
				wName = "w16"
				g.AddInput(wName, onnx.BFloat16, dimsOf([]int64{k, n}))
				w = g.Op("Cast", []string{wName}, "w", onnx.AttrInt("to", int64(onnx.Float)))
			}
			g.Node("MatMul", []string{"x", w}, []string{"y"}, "linear")
			linear := g.P.Node[len(g.P.Node)-1].GetName()
			rc := g.Const("r", []int64{b, s, n}, r...)
			loss := g.Op("ReduceSum", []string{g.Op("Mul", []string{"y", rc}, "weighted")}, "loss", onnx.AttrInt("keepdims", 1))
			loss = g.Op("Reshape", []string{loss, g.ConstInt64("one", []int64{1}, 1)}, "loss1")
			g.AddOutput(loss, onnx.Float, dimsOf([]int64{1}))
			info, err := shapes.Infer(m)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := kernels.RewriteBF16(m, info, map[string]bool{linear: true}); err != nil || got != 1 {
				t.Fatalf("RewriteBF16 rewrote %d products (%v), want 1", got, err)
			}
			if info, err = shapes.Infer(m); err != nil {
				t.Fatal(err)
			}
			res, err := grad.Differentiate(m, info, loss, wrt)
			if err != nil {
				t.Fatal(err)
			}
			g.RemoveOutput(loss)
			outs := map[string][]int64{"dx": {b, s, k}}
			g.Node("Identity", []string{res.Grads["x"]}, []string{"dx"}, "dx")
			if storage != "bf16-cast" {
				outs["dw"] = []int64{k, n}
				if storage == "nk-transposed" {
					outs["dw"] = []int64{n, k}
				}
				g.Node("Identity", []string{res.Grads[wName]}, []string{"dw"}, "dw")
			}
			for name, shape := range outs {
				g.AddOutput(name, onnx.Float, dimsOf(shape))
			}
			ops := map[string]int{}
			for _, nd := range g.P.Node {
				ops[nd.GetDomain()+"."+nd.GetOpType()]++
			}
			if ops["ai.migu.bf16.MatMulBF16"] != 1+len(outs) || ops[".MatMul"]+ops[".Gemm"]+ops[".Transpose"]+ops[".Cast"] != 0 {
				t.Fatalf("ops after the rewrite: %v", ops)
			}
			if err := g.TopoSort(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "linear.onnx")
			if err := m.Save(path, onnx.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			sess, err := ort.NewSession(path, ort.SessionOptions{Threads: 2, CustomOps: []string{lib}})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			xv, _ := ort.NewTensor(x, b, s, k)
			defer xv.Close()
			feeds := map[string]ort.Value{"x": xv}
			var wIn ort.Value
			switch storage {
			case "kn":
				wIn, err = ort.NewTensor(wv, k, n)
			case "nk-transposed":
				wt := make([]float32, k*n)
				for i := range k {
					for j := range n {
						wt[j*k+i] = wv[i*n+j]
					}
				}
				wIn, err = ort.NewTensor(wt, n, k)
			case "bf16-cast":
				bits := make([]uint16, k*n)
				for i, v := range wv {
					bits[i] = half.F32ToBF16(v)
				}
				wIn, err = ort.NewBFloat16Tensor(bits, k, n)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer wIn.Close()
			feeds[wName] = wIn
			got, err := sess.Run(feeds)
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string][]float32{}
			for i, o := range sess.Outputs() {
				byName[o.Name] = got[i].(*ort.Tensor[float32]).Data()
				defer got[i].Close()
			}
			// dx[t][i] = Σ_j r[t][j]·W[i][j], over n terms.
			check := func(what string, out []float32, idx int, terms int, term func(q int) (float64, float64)) {
				var want, scale float64
				for q := range terms {
					a, c := term(q)
					want += a * c
					scale += math.Abs(a * c)
				}
				if e := math.Abs(float64(out[idx]) - want); e > float64(terms)*u*scale {
					t.Fatalf("%s[%d] = %g, want %g (bf16-rounded operands): error %.3g above %.3g", what, idx, out[idx], want, e, float64(terms)*u*scale)
				}
			}
			for tok := range b * s {
				for i := range k {
					check("dx", byName["dx"], tok*k+i, n, func(j int) (float64, float64) { return bf16(r[tok*n+j]), bf16(wv[i*n+j]) })
				}
			}
			if dw := byName["dw"]; dw != nil {
				for i := range k {
					for j := range n {
						idx := i*n + j
						if storage == "nk-transposed" {
							idx = j*k + i
						}
						check("dW", dw, idx, b*s, func(tok int) (float64, float64) { return bf16(x[tok*k+i]), bf16(r[tok*n+j]) })
					}
				}
			}
		})
	}
}
