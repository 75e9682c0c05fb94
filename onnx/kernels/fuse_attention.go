package kernels

import (
	"os"
	"slices"

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
// fewer (masks, t5's position bias, [H, R, S] in its cached decoder).
// Grouped queries stacked into their key-value heads' rows, as
// exporters.Builder.Attend writes them (a Reshape of q, the mask Tiled
// over the groups, a Reshape of the context back), go to the kernel as
// they are: the query heads a multiple of the key-value heads, the
// Reshapes and the Tile bypassed. The
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
		identity := []int64{0, 1, 2, 3}
		q, permQ := fold(mm.Input[0], identity, true)
		k, permK := fold(mm.Input[1], []int64{0, 1, 3, 2}, false)
		v, permV := fold(ctx.Input[1], identity, false)
		y, permY := ctx.Output[0], identity
		// Grouped queries as the exporters stack them (Builder.Attend):
		// the query heads reshaped into their key-value heads' rows, the
		// bias Tiled to match and the context reshaped back. The kernel
		// takes the query heads as they are instead.
		var unstack *onnxpb.NodeProto
		if g := groupedQueries(types, producers[q], only(y), permQ); g != nil {
			if b, ok := groupedBias(m, types, producers[bias], bias, g.groups); ok {
				passed = append(passed, g.stack)
				if b != bias {
					passed = append(passed, producers[bias])
				}
				q, permQ = fold(g.stack.Input[0], identity, true)
				unstack, y, bias = g.unstack, g.unstack.Output[0], b
			}
		}
		if !sameHeads(types, q, k, v, permQ, permK, permV) {
			continue
		}
		for _, t := range passed {
			bypassed[t] = true
		}
		if unstack != nil {
			drop[unstack] = true
		}
		// Forward from the context: Transposes that are its only reader.
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
// the batch axis, k and v on the heads and keys, and q and k on the last
// axis, all known to be equal (the fused op does not broadcast), and q's
// heads are k's or a known multiple of them (grouped queries).
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
	grouped := qs[1].Known && ks[1].Known && qs[1].Param == "" && ks[1].Param == "" && ks[1].Value > 0 && qs[1].Value%ks[1].Value == 0
	return sameDim(qs[0], ks[0]) && sameDim(qs[0], vs[0]) && (sameDim(qs[1], ks[1]) || grouped) && sameDim(ks[1], vs[1]) &&
		sameDim(ks[2], vs[2]) && sameDim(qs[3], ks[3])
}

// grouping is grouped-query attention's stacking: stack reshapes the
// query heads [B, H, R, D] into their key-value heads' rows [B, H/G, G·R,
// D], unstack the context back to [B, H, R, E].
type grouping struct {
	stack, unstack *onnxpb.NodeProto
	groups         int64
}

// groupedQueries returns the grouping of a query operand whose view
// (perm, from the scores' MatMul) is stack's output as it is, and whose
// context's only reader is unstack; nil for any other pattern. A Reshape
// from [B, H, R, D] to [B, H/G, ·, D] with B and D kept can only stack the
// heads in groups of G, so the shapes tell it.
func groupedQueries(types Types, stack, unstack *onnxpb.NodeProto, perm []int64) *grouping {
	isReshape := func(n *onnxpb.NodeProto) bool {
		return n != nil && n.GetOpType() == "Reshape" && n.GetDomain() == "" && len(n.Input) == 2 && len(n.Output) == 1
	}
	if !isReshape(stack) || !isReshape(unstack) || !slices.Equal(perm, []int64{0, 1, 2, 3}) {
		return nil
	}
	// heads tells whether a Reshape keeps axes 0 and 3 of rank-4 shapes
	// and returns its input's and output's head counts.
	heads := func(n *onnxpb.NodeProto) (in, out int64, ok bool) {
		_, is, ok1 := types.Type(n.Input[0])
		_, os, ok2 := types.Type(n.Output[0])
		if !ok1 || !ok2 || len(is) != 4 || len(os) != 4 || !sameDim(is[0], os[0]) || !sameDim(is[3], os[3]) ||
			!is[1].Known || !os[1].Known || is[1].Param != "" || os[1].Param != "" {
			return 0, 0, false
		}
		return is[1].Value, os[1].Value, true
	}
	h, hk, ok1 := heads(stack)
	hk2, h2, ok2 := heads(unstack)
	if !ok1 || !ok2 || hk <= 0 || h != h2 || hk != hk2 || h%hk != 0 || h == hk {
		return nil
	}
	return &grouping{stack: stack, unstack: unstack, groups: h / hk}
}

// groupedBias returns the bias of grouped-query attention over the query
// heads as they are: the input of the Tile (tile) that repeats it G times
// along the rows, of one head; or the bias itself where it broadcasts
// over rows and heads (a padding mask [B, 1, 1, S]). "" with ok for no
// bias; not ok for any other.
func groupedBias(m *onnx.Model, types Types, tile *onnxpb.NodeProto, bias string, groups int64) (string, bool) {
	if bias == "" {
		return "", true
	}
	oneHead := func(b string) bool {
		_, s, ok := types.Type(b)
		return ok && (len(s) < 3 || sameDim(s[len(s)-3], onnx.D(1)))
	}
	if _, s, ok := types.Type(bias); ok && len(s) >= 2 && sameDim(s[len(s)-2], onnx.D(1)) && oneHead(bias) {
		return bias, true
	}
	if tile == nil || tile.GetOpType() != "Tile" || tile.GetDomain() != "" || len(tile.Input) != 2 {
		return "", false
	}
	reps, ok := int64s(m, tile.Input[1])
	if !ok || !slices.Equal(reps, []int64{1, 1, groups, 1}) || !oneHead(tile.Input[0]) {
		return "", false
	}
	return tile.Input[0], true
}
