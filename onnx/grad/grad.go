// Package grad differentiates ONNX graphs in reverse mode and writes the
// gradient as more nodes of the same graph, using standard ONNX operators
// only, so that any stock ONNX Runtime build runs forward and backward in
// one session. One Rule per op type, registered in a table; ops that carry
// no gradient (shapes, indices, masks) are recognised by their value types
// and skipped, and values passed through StopGradient are constants.
package grad

import (
	"fmt"
	"sort"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Rule emits the gradient of one forward node. dY[i] names the gradient of
// output i, or is "" when no gradient reaches that output. The rule returns
// one name per input: the gradient contribution for that input, or "" for
// inputs that need none (c.Needs tells which do).
type Rule func(c *Context, n *onnxpb.NodeProto, dY []string) ([]string, error)

// rules is the registry: op type to gradient rule, keyed as opKey names
// a node (the op type in the default domain, "domain.OpType" elsewhere).
var rules = map[string]Rule{}

// opKey is the registry key of a node.
func opKey(n *onnxpb.NodeProto) string {
	if d := onnx.CanonicalDomain(n.GetDomain()); d != "" {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}

// register adds rules from the files that define them.
func register(r map[string]Rule) {
	for op, rule := range r {
		if _, dup := rules[op]; dup {
			panic("grad: two rules for " + op)
		}
		rules[op] = rule
	}
}

// Ops lists the op types that have a gradient rule.
func Ops() []string {
	ops := make([]string, 0, len(rules))
	for op := range rules {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// Result is what Differentiate added to the graph.
type Result struct {
	// Grads maps each requested tensor to the value holding its gradient.
	Grads map[string]string
	// Upstream maps each forward value that a gradient reached to that
	// gradient (the sum of its contributions, as its producer's rule
	// received it).
	Upstream map[string]string
	// Forward is the number of forward nodes: the backward pass starts at
	// that index of the node list.
	Forward int
	// Nodes is the number of nodes the backward pass added.
	Nodes int
}

// MinOpset is the oldest default-domain opset the rules emit for (axes as
// inputs of ReduceSum, Split, Squeeze and Unsqueeze).
const MinOpset = 13

// Differentiate appends to m's graph the gradient of loss (a float tensor; its
// gradient seed is 1 everywhere, so a shape-[1] loss gives d loss / d x)
// with respect to each value in wrt, and returns the gradient value names.
// A tensor in wrt that does not influence the loss gets a zero gradient of
// its shape. Every op on a path from wrt to loss needs a rule; otherwise
// the error lists each missing op type with one node that uses it.
func Differentiate(m *onnx.Model, shapes Shapes, loss string, wrt []string) (*Result, error) {
	opset := m.Opset("")
	if opset < MinOpset {
		return nil, badinput.Errorf("the model imports ONNX opset %d; differentiation needs opset %d or newer (re-export it)", opset, MinOpset)
	}
	g := m.Graph()
	c := &Context{g: g, opset: opset, shapes: shapes, consts: map[string]string{}}
	before := len(g.P.Node)
	c.needs = activePaths(g, shapes, loss, wrt)
	if err := checkRules(g, c); err != nil {
		return nil, err
	}

	res := &Result{Grads: map[string]string{}, Upstream: map[string]string{}, Forward: before}
	grads := map[string][]string{} // value → gradient contributions
	lossDType, _, _ := shapes.Type(loss)
	seed := c.Op("ConstantOfShape", []string{c.Op("Shape", []string{loss}, "bw/seed.shape")}, "bw/seed",
		onnx.AttrTensor("value", fillTensor(lossDType, 1)))
	grads[loss] = []string{seed}

	nodes := g.P.Node[:before]
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		dY := make([]string, len(n.Output))
		any := false
		for k, out := range n.Output {
			if contribs := grads[out]; len(contribs) > 0 && c.needs[out] {
				dY[k] = c.sum(contribs, out)
				res.Upstream[out] = dY[k]
				any = true
			}
		}
		if !any || !c.needsAnyInput(n) {
			continue
		}
		dX, err := rules[opKey(n)](c, n, dY)
		if err != nil {
			return nil, badinput.Errorf("gradient of node %s: %v", onnx.NodeLabel(n), err)
		}
		if len(dX) != len(n.Input) {
			return nil, fmt.Errorf("grad: rule for %s returned %d gradients for %d inputs", n.GetOpType(), len(dX), len(n.Input))
		}
		for k, in := range n.Input {
			if dX[k] != "" && c.needs[in] {
				grads[in] = append(grads[in], dX[k])
			}
		}
	}
	for _, w := range wrt {
		if contribs := grads[w]; len(contribs) > 0 {
			res.Grads[w] = c.sum(contribs, w)
		} else {
			res.Grads[w] = c.zerosLike(w, w)
		}
	}
	res.Nodes = len(g.P.Node) - before
	return res, nil
}

// checkRules finds, before anything is emitted, every node on a gradient
// path whose op has no rule, and reports them all in one error.
func checkRules(g *onnx.Graph, c *Context) error {
	missing := map[string]string{}
	for _, n := range g.P.Node {
		onPath := false
		for _, out := range n.Output {
			onPath = onPath || c.needs[out]
		}
		if !onPath || !c.needsAnyInput(n) {
			continue
		}
		op := opKey(n)
		if _, ok := rules[op]; ok {
			continue
		}
		if _, seen := missing[op]; !seen {
			missing[op] = onnx.NodeLabel(n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return badinput.Errorf("no gradient rule for %d op type(s) on the path to the loss: %s", len(missing), onnx.OpList(missing))
}

// stopKey marks, in a node's metadata, an Identity node of StopGradient.
const stopKey = "migu.stop_gradient"

// StopGradient adds to g a node passing x through unchanged whose output
// the backward pass treats as a constant, as PyTorch's detach: no gradient
// flows back through it, and the nodes that compute x need no rule unless
// another path needs them. It is an Identity node marked in its metadata,
// which runtimes ignore. It returns the output's name.
func StopGradient(g *onnx.Graph, x, hint string) string {
	out := g.Op("Identity", []string{x}, hint)
	n := g.P.Node[len(g.P.Node)-1]
	n.MetadataProps = append(n.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(stopKey), Value: proto.String("true")})
	return out
}

// stopsGradient reports whether n is a node of StopGradient.
func stopsGradient(n *onnxpb.NodeProto) bool {
	for _, p := range n.GetMetadataProps() {
		if p.GetKey() == stopKey {
			return true
		}
	}
	return false
}

// activePaths marks the float values that lie on a path from a tensor in
// wrt to the loss: only those carry gradients.
func activePaths(g *onnx.Graph, shapes Shapes, loss string, wrt []string) map[string]bool {
	isFloat := func(v string) bool {
		dt, _, ok := shapes.Type(v)
		return ok && dt.IsFloat()
	}
	forward := map[string]bool{}
	for _, w := range wrt {
		forward[w] = true
	}
	for _, n := range g.P.Node {
		if stopsGradient(n) {
			continue
		}
		for _, in := range n.Input {
			if forward[in] {
				for _, out := range n.Output {
					if out != "" && isFloat(out) {
						forward[out] = true
					}
				}
				break
			}
		}
	}
	producer := g.Producers()
	needs := map[string]bool{}
	stack := []string{loss}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if needs[v] || !forward[v] {
			continue
		}
		needs[v] = true
		if p := producer[v]; p != nil {
			stack = append(stack, p.Input...)
		}
	}
	return needs
}
