package ort

import (
	"fmt"

	ortgo "github.com/yalue/onnxruntime_go"
)

// Binding ties tensors to a session's inputs and outputs once, so that each
// Run only executes the graph: ORT reads the inputs' Go memory and writes
// the outputs' in place, and Run allocates nothing in Go. Refill the input
// tensors' Data() between runs; bind again only to swap a tensor (say, a
// View with a shorter sequence). Outputs must be preallocated with the
// shapes the graph produces; outputs left unbound are not fetched. A
// Binding is not safe for concurrent use.
type Binding struct {
	s       *Session
	io      *ortgo.IoBinding
	inputs  []Value
	outputs []Value
	nIn     int
	nOut    int
	dirty   bool
}

// NewBinding starts an empty binding for the session.
func (s *Session) NewBinding() (*Binding, error) {
	if s.das == nil {
		return nil, errClosed
	}
	io, err := s.das.CreateIoBinding()
	if err != nil {
		return nil, fmt.Errorf("creating ORT I/O binding for %s: %w", s.name, err)
	}
	return &Binding{
		s:       s,
		io:      io,
		inputs:  make([]Value, len(s.inputs)),
		outputs: make([]Value, len(s.outputs)),
	}, nil
}

// BindInput binds v to the named input after checking its dtype, rank and
// fixed dimensions against the model; binding a name again replaces the
// tensor. The binding keeps v alive; do not close v while it is bound.
func (b *Binding) BindInput(name string, v Value) error {
	if b.io == nil {
		return errClosed
	}
	i, ok := b.s.inIdx[name]
	if !ok {
		return b.s.unknownInput(name)
	}
	if err := checkValue("input", &b.s.inputs[i], v); err != nil {
		return err
	}
	if err := b.io.BindInput(name, v.ortValue()); err != nil {
		return fmt.Errorf("input %q: %w", name, unwrapORT(err))
	}
	if b.inputs[i] == nil {
		b.nIn++
	}
	b.inputs[i], b.dirty = v, true
	return nil
}

// BindOutput binds a preallocated tensor to the named output, checked like
// an input. ORT writes the output into v's memory on every Run.
func (b *Binding) BindOutput(name string, v Value) error {
	if b.io == nil {
		return errClosed
	}
	i, ok := b.s.outIdx[name]
	if !ok {
		return b.s.unknownOutput(name)
	}
	if err := checkValue("output", &b.s.outputs[i], v); err != nil {
		return err
	}
	if err := b.io.BindOutput(name, v.ortValue()); err != nil {
		return fmt.Errorf("output %q: %w", name, unwrapORT(err))
	}
	if b.outputs[i] == nil {
		b.nOut++
	}
	b.outputs[i], b.dirty = v, true
	return nil
}

// Run executes the graph on the bound tensors. The first run after a
// (re)bind also checks that symbolic dimensions agree across inputs and
// outputs (every "batch" the same size); later runs go straight to ORT.
func (b *Binding) Run() error {
	if b.io == nil || b.s.das == nil {
		return errClosed
	}
	if b.dirty {
		if err := b.check(); err != nil {
			return err
		}
		b.dirty = false
	}
	if err := b.s.das.RunWithBinding(b.io); err != nil {
		return fmt.Errorf("running %s: %w", b.s.name, unwrapORT(err))
	}
	return nil
}

func (b *Binding) check() error {
	if b.nIn < len(b.inputs) {
		for i, v := range b.inputs {
			if v == nil {
				return b.s.missingInput(i)
			}
		}
	}
	if b.nOut == 0 {
		return fmt.Errorf("no output is bound; the session's outputs are %s", describe(b.s.outputs))
	}
	for i, v := range b.inputs {
		if v.ortValue() == nil {
			return fmt.Errorf("input %q: the bound tensor was closed", b.s.inputs[i].Name)
		}
	}
	for i, v := range b.outputs {
		if v != nil && v.ortValue() == nil {
			return fmt.Errorf("output %q: the bound tensor was closed", b.s.outputs[i].Name)
		}
	}
	return b.s.checkSymbols(b.inputs, b.outputs)
}

// Close releases the ORT binding; the bound tensors stay open.
func (b *Binding) Close() error {
	if b.io == nil {
		return nil
	}
	err := b.io.Destroy()
	b.io = nil
	b.inputs, b.outputs = nil, nil
	return err
}
