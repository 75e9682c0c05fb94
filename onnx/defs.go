package onnx

import (
	"fmt"

	"github.com/migu-ml/migu/onnx/onnxpb"
)

// checkDefinitions refuses a graph that defines a name twice: two
// initializers (dense or sparse) of one name, two graph inputs of one
// name, or a node output that repeats another node's output, an
// initializer or a graph input. ONNX graphs are in single static
// assignment form; ONNX Runtime refuses such a model with a long dump, and
// migu's own passes would silently read whichever definition they meet
// first. A graph input that shares its name with an initializer is
// allowed: that is how IR versions before 4 declare initializers, and the
// initializer is then the input's default. Subgraphs are checked in their
// own scope.
func checkDefinitions(g *onnxpb.GraphProto) error {
	inits := map[string]bool{}
	for _, t := range g.Initializer {
		if inits[t.GetName()] {
			return fmt.Errorf("initializer %q is defined twice", t.GetName())
		}
		inits[t.GetName()] = true
	}
	for _, s := range g.SparseInitializer {
		name := s.GetValues().GetName()
		if inits[name] {
			return fmt.Errorf("initializer %q is defined twice", name)
		}
		inits[name] = true
	}
	inputs := map[string]bool{}
	for _, vi := range g.Input {
		if inputs[vi.GetName()] {
			return fmt.Errorf("graph input %q is declared twice", vi.GetName())
		}
		inputs[vi.GetName()] = true
	}
	outputs := map[string]string{} // value → the node that computes it
	for _, n := range g.Node {
		for _, o := range n.Output {
			if o == "" {
				continue // an optional output left out
			}
			switch {
			case inits[o]:
				return fmt.Errorf("value %q is defined twice: an initializer and the output of node %s", o, NodeLabel(n))
			case inputs[o]:
				return fmt.Errorf("value %q is defined twice: a graph input and the output of node %s", o, NodeLabel(n))
			case outputs[o] != "":
				return fmt.Errorf("value %q is defined twice: the output of nodes %s and %s", o, outputs[o], NodeLabel(n))
			}
			outputs[o] = NodeLabel(n)
		}
		for _, a := range n.Attribute {
			if a.G != nil {
				if err := checkDefinitions(a.G); err != nil {
					return fmt.Errorf("node %s, subgraph %s: %w", NodeLabel(n), a.GetName(), err)
				}
			}
			for _, sg := range a.Graphs {
				if err := checkDefinitions(sg); err != nil {
					return fmt.Errorf("node %s, subgraph %s: %w", NodeLabel(n), a.GetName(), err)
				}
			}
		}
	}
	return nil
}
