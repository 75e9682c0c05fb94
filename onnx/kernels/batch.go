package kernels

import (
	"math"
	"slices"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Attention's batched products through oneDNN: ai.migu.bf16.BatchMatMul
// (csrc/migu_bf16.c) multiplies 4-D operands through strided views, so
// the Transposes that move heads in front of tokens and back
// ([batch, tokens, heads, dim] ⇄ [batch, heads, tokens, dim]), and the
// ones onnx/grad's MatMul rule writes to transpose an operand, fold into
// the product and are never computed.

// RewriteBatch replaces every MatMul of two 4-D float32 operands —
// attention's scores and context products, forward and backward — by
// BatchMatMul, with the same name, operands (before their Transposes) and
// output. Chains of Transposes feeding an operand fold into permA or
// permB; Transposes that are the only reader of the product's output fold
// into permY (the output takes the last one's name) — each only where the
// operand or output keeps its contiguous axis among the matrix axes
// (innerContiguous), as attention's always do. A Mul by a scalar power
// of two among those operand Transposes, or as the output's only reader
// (attention's 1/sqrt(d) on the queries, and its gradient), folds into
// alpha: scaling by 2^k changes no bit of a rounded sum, so the Mul goes
// and the Transposes around it fold too. A bypassed Transpose or Mul that
// nothing else reads goes. bf16 rounds the operands to bfloat16, as
// autocast multiplies attention under --precision bf16. Rewrite after
// differentiation (BatchMatMul has no gradient rule). It returns the
// number of products rewritten.
func RewriteBatch(m *onnx.Model, types Types, bf16 bool) int {
	g := m.Graph()
	rank4 := func(v string) bool {
		dt, s, ok := types.Type(v)
		return ok && dt == onnx.Float && len(s) == 4
	}
	consumers, producers := g.Consumers(), g.Producers()
	drop, bypassed := map[*onnxpb.NodeProto]bool{}, map[*onnxpb.NodeProto]bool{}
	count := 0
	for _, n := range g.P.Node {
		if n.GetOpType() != "MatMul" || n.GetDomain() != "" || len(n.Input) != 2 || len(n.Output) != 1 ||
			!rank4(n.Input[0]) || !rank4(n.Input[1]) || !rank4(n.Output[0]) {
			continue
		}
		var perms [2][]int64
		alpha := 1.0
		for i := range 2 {
			perms[i] = []int64{0, 1, 2, 3}
			for {
				t := producers[n.Input[i]]
				if x, s, ok := powerOfTwoScaling(m, t); ok && rank4(x) {
					alpha *= s
					bypassed[t] = true
					n.Input[i] = x
					continue
				}
				p := transposePerm(t)
				if p == nil || !rank4(t.Input[0]) {
					break
				}
				// The operand is transpose(t's input, p) read through perm:
				// axis j of it is axis p[perm[j]] of t's input.
				folded := composePerm(p, perms[i])
				if !innerContiguous(folded) {
					break
				}
				perms[i] = folded
				bypassed[t] = true
				n.Input[i] = t.Input[0]
			}
		}
		permY := []int64{0, 1, 2, 3}
		for {
			out := n.Output[0]
			readers := consumers[out]
			if len(readers) != 1 || g.Output(out) != nil {
				break
			}
			t := readers[0]
			if _, s, ok := powerOfTwoScaling(m, t); ok && !bypassed[t] {
				alpha *= s
				drop[t] = true
				n.Output[0] = t.Output[0]
				producers[t.Output[0]] = n
				delete(producers, out)
				continue
			}
			p := transposePerm(t)
			if p == nil || bypassed[t] {
				// A bypassed Transpose's input is read by a product
				// rewritten already: it must keep its name.
				break
			}
			// t's output, axis j, is axis permY[p[j]] of the product.
			folded := composePerm(permY, p)
			if folded[3] < 2 {
				// The output's contiguous axis would be a batch axis.
				break
			}
			permY = folded
			drop[t] = true
			n.Output[0] = t.Output[0]
			producers[t.Output[0]] = n
			delete(producers, out)
		}
		n.OpType = proto.String("BatchMatMul")
		n.Domain = proto.String(onnx.DomainMiguBF16)
		n.Attribute = []*onnxpb.AttributeProto{
			onnx.AttrInts("permA", perms[0]...), onnx.AttrInts("permB", perms[1]...), onnx.AttrInts("permY", permY...),
		}
		if bf16 {
			n.Attribute = append(n.Attribute, onnx.AttrInt("bf16", 1))
		}
		if alpha != 1 {
			n.Attribute = append(n.Attribute, onnx.AttrFloat("alpha", float32(alpha)))
		}
		count++
	}
	// A bypassed Transpose or Mul that nothing else reads goes — also one
	// read only by bypassed nodes that go (the gradient rule's Transpose
	// of a Transpose).
	for changed := true; changed; {
		changed = false
		read := map[string]bool{}
		for _, n := range g.P.Node {
			if !drop[n] {
				for _, in := range n.Input {
					read[in] = true
				}
			}
		}
		for t := range bypassed {
			if !drop[t] && !read[t.Output[0]] && g.Output(t.Output[0]) == nil {
				drop[t] = true
				changed = true
			}
		}
	}
	if len(drop) > 0 {
		g.RemoveNodes(func(n *onnxpb.NodeProto) bool { return drop[n] })
	}
	if count > 0 {
		m.SetOpset(onnx.DomainMiguBF16, Opset)
	}
	return count
}

// transposePerm returns the permutation of a standard 4-D Transpose node
// (an absent perm reverses the axes), or nil for any other node.
func transposePerm(n *onnxpb.NodeProto) []int64 {
	if n == nil || n.GetOpType() != "Transpose" || n.GetDomain() != "" || len(n.Input) != 1 || len(n.Output) != 1 {
		return nil
	}
	a := onnx.GetAttr(n, "perm")
	if a == nil {
		return []int64{3, 2, 1, 0}
	}
	p := a.Ints
	if len(p) != 4 {
		return nil
	}
	sorted := slices.Clone(p)
	slices.Sort(sorted)
	if !slices.Equal(sorted, []int64{0, 1, 2, 3}) {
		return nil
	}
	return slices.Clone(p)
}

// powerOfTwoScaling returns x and s where n is a standard Mul of x by a
// float32 scalar initializer s = 2^k, within the normal range both ways
// (so that s·v rounds as v does, and alpha stays a power of two).
func powerOfTwoScaling(m *onnx.Model, n *onnxpb.NodeProto) (x string, s float64, ok bool) {
	if n == nil || n.GetOpType() != "Mul" || n.GetDomain() != "" || len(n.Input) != 2 || len(n.Output) != 1 {
		return "", 0, false
	}
	for k, in := range n.Input {
		v, isScalar := scalar(m, in)
		if !isScalar {
			continue
		}
		frac, exp := math.Frexp(float64(v))
		if frac == 0.5 && exp >= -60 && exp <= 60 {
			return n.Input[1-k], float64(v), true
		}
	}
	return "", 0, false
}

// innerContiguous tells whether a 4-D tensor read through perm has its
// contiguous (last) axis among the matrix axes: oneDNN multiplies such
// operands with its optimized kernels, and others with its reference code,
// hundreds of times slower.
func innerContiguous(perm []int64) bool { return perm[2] == 3 || perm[3] == 3 }

// composePerm returns the permutation of transpose(transpose(x, inner),
// outer): axis j of the result is axis inner[outer[j]] of x.
func composePerm(inner, outer []int64) []int64 {
	p := make([]int64, len(outer))
	for j, o := range outer {
		p[j] = inner[o]
	}
	return p
}
