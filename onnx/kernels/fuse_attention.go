package kernels

import (
	"os"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// FuseAttention replaces scaled dot-product attention written in standard
// operators —
//
//	MatMul(q, kᵀ) → [Add(·, Bias)] → Softmax(axis last) → MatMul(·, v)
//
// over float32 4-D operands — by one ai.migu.Attention(Q, K, V [, Bias])
// node, whose gradient rule emits one ai.migu.AttentionGrad: neither pass
// holds the [B, H, R, S] scores or probabilities (the backward pass
// recomputes them per head from each row's log-sum-exp, the node's second
// output), and the head Transposes around the operands and the context
// fold into the op's permQ, permK, permV and permY, as they do into
// BatchMatMul (RewriteBatch). A Mul by a power-of-two scalar on q or on
// the scores (1/√d) folds into alpha. Bias is the Add's other operand
// where it broadcasts to the scores with their last axis, of rank 4 or
// fewer (masks, t5's position bias, [H, R, S] in its cached decoder,
// llama's grouped-query mask Tiled over the groups). The
// scores, probabilities and every value between must have no other reader
// and not be graph outputs; q, k and v must agree on the batch and head
// axes without broadcasting. Run it before differentiation and before
// Fuse (whose FuseSoftmax would take the softmax); it returns the number
// of attentions fused.
//
// It is not among Fuse's rewrites: training applies it to fp32 graphs on
// CPUs with AVX-512 (AttentionFast; train.GraphOptions.FusedAttention),
// whose bf16 attention runs in bf16 BatchMatMuls instead.
func FuseAttention(m *onnx.Model, types Types) (int, error) {
	g := m.Graph()
	consumers, producers := g.Consumers(), g.Producers()
	outputs := outputSet(g)
	rank4 := func(v string) bool {
		dt, s, ok := types.Type(v)
		return ok && dt == onnx.Float && len(s) == 4
	}
	// only returns the single reader of v, or nil.
	only := func(v string) *onnxpb.NodeProto {
		if cs := consumers[v]; len(cs) == 1 && !outputs[v] {
			return cs[0]
		}
		return nil
	}
	drop := map[*onnxpb.NodeProto]bool{}
	bypassed := map[*onnxpb.NodeProto]bool{}
	replace := map[*onnxpb.NodeProto]*onnxpb.NodeProto{}
	for _, sm := range g.P.Node {
		if sm.GetOpType() != "Softmax" || sm.GetDomain() != "" || len(sm.Input) != 1 || len(sm.Output) != 1 ||
			!rank4(sm.Input[0]) || !axisIsLast(m, sm, 4) {
			continue
		}
		ctx := only(sm.Output[0])
		if !isMatMul(ctx) || ctx.Input[0] != sm.Output[0] || !rank4(ctx.Input[1]) || !rank4(ctx.Output[0]) {
			continue
		}
		// Back from the softmax: the bias Add, a scaling Mul, the scores.
		alpha := 1.0
		z, bias := sm.Input[0], ""
		chain := []*onnxpb.NodeProto{sm}
		_, zs, _ := types.Type(z)
		if add := producers[z]; add != nil && add.GetOpType() == "Add" && add.GetDomain() == "" && len(add.Input) == 2 && only(z) == sm {
			for k, x := range add.Input {
				if scoresBias(types, x, add.Input[1-k], zs, true) {
					z, bias = x, add.Input[1-k]
					chain = append(chain, add)
					break
				}
			}
		}
		if mul := producers[z]; mul != nil && only(z) != nil {
			if x, s, ok := powerOfTwoScaling(m, mul); ok && rank4(x) {
				alpha *= s
				z = x
				chain = append(chain, mul)
			}
		}
		mm := producers[z]
		if !isMatMul(mm) || only(z) == nil || !rank4(mm.Input[0]) || !rank4(mm.Input[1]) {
			continue
		}
		chain = append(chain, mm)
		// The operands, each read through its Transposes (and q through
		// a scaling Mul): k's view starts as kᵀ's with the last two axes
		// swapped.
		var passed []*onnxpb.NodeProto
		fold := func(v string, perm []int64, scales bool) (string, []int64) {
			for {
				t := producers[v]
				if x, s, ok := powerOfTwoScaling(m, t); scales && ok && rank4(x) {
					alpha *= s
					passed = append(passed, t)
					v = x
					continue
				}
				p := transposePerm(t)
				if p == nil || !rank4(t.Input[0]) {
					return v, perm
				}
				passed = append(passed, t)
				perm = composePerm(p, perm)
				v = t.Input[0]
			}
		}
		q, permQ := fold(mm.Input[0], []int64{0, 1, 2, 3}, true)
		k, permK := fold(mm.Input[1], []int64{0, 1, 3, 2}, false)
		v, permV := fold(ctx.Input[1], []int64{0, 1, 2, 3}, false)
		if !sameHeads(types, q, k, v, permQ, permK, permV) {
			continue
		}
		for _, t := range passed {
			bypassed[t] = true
		}
		// Forward from the context: Transposes that are its only reader.
		y, permY := ctx.Output[0], []int64{0, 1, 2, 3}
		for {
			t := only(y)
			p := transposePerm(t)
			if p == nil {
				break
			}
			permY = composePerm(permY, p)
			drop[t] = true
			y = t.Output[0]
		}
		for _, n := range chain {
			drop[n] = true
		}
		ins := []string{q, k, v}
		if bias != "" {
			ins = append(ins, bias)
		}
		attrs := []*onnxpb.AttributeProto{
			onnx.AttrInts("permQ", permQ...), onnx.AttrInts("permK", permK...),
			onnx.AttrInts("permV", permV...), onnx.AttrInts("permY", permY...),
		}
		if alpha != 1 {
			attrs = append(attrs, onnx.AttrFloat("alpha", float32(alpha)))
		}
		replace[ctx] = &onnxpb.NodeProto{
			OpType: proto.String("Attention"), Domain: proto.String(onnx.DomainMigu),
			Name: proto.String(g.Unique(y + "/Attention")), Input: ins, Output: []string{y},
			Attribute: attrs,
		}
	}
	// A bypassed Transpose or Mul that nothing left reads goes.
	for changed := true; changed; {
		changed = false
		read := map[string]bool{}
		for _, n := range g.P.Node {
			if drop[n] {
				continue
			}
			ins := n.Input
			if r := replace[n]; r != nil {
				ins = r.Input
			}
			for _, in := range ins {
				read[in] = true
			}
		}
		for t := range bypassed {
			if !drop[t] && !read[t.Output[0]] && !outputs[t.Output[0]] {
				drop[t] = true
				changed = true
			}
		}
	}
	replaceNodes(m, drop, replace)
	return len(replace), nil
}

// AttentionFast tells whether the CPU has AVX-512F, which the fused
// attention's products are written for; elsewhere they run in plain
// loops, slower than the standard operators' MLAS products.
func AttentionFast() bool {
	data, err := os.ReadFile("/proc/cpuinfo")
	return err == nil && cpuFlags(data)["avx512f"]
}

// isMatMul tells whether n is a standard MatMul of two inputs.
func isMatMul(n *onnxpb.NodeProto) bool {
	return n != nil && n.GetOpType() == "MatMul" && n.GetDomain() == "" && len(n.Input) == 2 && len(n.Output) == 1
}

// sameHeads tells whether q, k and v read through their perms agree on
// the batch and head axes, k and v on the keys, and q and k on the last
// axis, all known to be equal (the fused op does not broadcast).
func sameHeads(types Types, q, k, v string, pq, pk, pv []int64) bool {
	view := func(x string, p []int64) onnx.Shape {
		_, s, _ := types.Type(x)
		out := make(onnx.Shape, 4)
		for i, a := range p {
			out[i] = s[a]
		}
		return out
	}
	qs, ks, vs := view(q, pq), view(k, pk), view(v, pv)
	return sameDim(qs[0], ks[0]) && sameDim(qs[0], vs[0]) && sameDim(qs[1], ks[1]) && sameDim(qs[1], vs[1]) &&
		sameDim(ks[2], vs[2]) && sameDim(qs[3], ks[3])
}
