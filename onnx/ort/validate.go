package ort

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/onnx"
)

// checkValue compares a value with the declared input or output before ORT
// sees it, so that a mistake reads as `input "ids": dtype float32, model
// wants int64` rather than as an ORT status. It allocates only on error.
func checkValue(kind string, info *TensorInfo, v Value) error {
	if v == nil || v.ortValue() == nil {
		return fmt.Errorf("%s %q: the tensor is nil or closed", kind, info.Name)
	}
	if v.DType() != info.DType {
		return fmt.Errorf("%s %q: dtype %s, model wants %s", kind, info.Name, v.DType(), info.DType)
	}
	if info.Shape == nil {
		return nil
	}
	dims := v.dims()
	if len(info.Shape) == 0 {
		return fmt.Errorf("%s %q: the model declares a scalar: %w", kind, info.Name, ErrScalar)
	}
	if len(dims) != len(info.Shape) {
		return fmt.Errorf("%s %q: shape %s has rank %d, model declares %s (rank %d)", kind, info.Name, fmtShape(dims), len(dims), info.Shape, len(info.Shape))
	}
	for k, d := range info.Shape {
		if fixed(d) && dims[k] != d.Value {
			return fmt.Errorf("%s %q: shape %s does not fit %s: dim %d is %d, model wants %d", kind, info.Name, fmtShape(dims), info.Shape, k, dims[k], d.Value)
		}
	}
	return nil
}

// fixed reports whether a declared dimension is a number.
func fixed(d onnx.Dim) bool { return d.Known && d.Param == "" }

// symDim is one symbolic dimension of the session's inputs and outputs
// whose name occurs more than once; first indexes the name's first entry.
type symDim struct {
	output bool
	index  int
	dim    int
	name   string
	first  int
}

// symbolTable lists the symbolic dimensions shared by several places, in
// inputs-then-outputs order, so that Run can check them without a map.
func symbolTable(inputs, outputs []TensorInfo) []symDim {
	count := map[string]int{}
	for _, infos := range [][]TensorInfo{inputs, outputs} {
		for _, info := range infos {
			for _, d := range info.Shape {
				if d.Param != "" {
					count[d.Param]++
				}
			}
		}
	}
	var syms []symDim
	first := map[string]int{}
	for o, infos := range [][]TensorInfo{inputs, outputs} {
		for i, info := range infos {
			for k, d := range info.Shape {
				if count[d.Param] < 2 {
					continue
				}
				f, ok := first[d.Param]
				if !ok {
					f = len(syms)
					first[d.Param] = f
				}
				syms = append(syms, symDim{output: o == 1, index: i, dim: k, name: d.Param, first: f})
			}
		}
	}
	return syms
}

// checkSymbols reports a symbolic dimension (say "batch") bound to
// different sizes in two places. ins and outs are indexed like the
// session's inputs and outputs; nil entries are skipped. It runs after
// checkValue, so ranks are known to match.
func (s *Session) checkSymbols(ins, outs []Value) error {
	at := func(sd symDim) Value {
		vals := ins
		if sd.output {
			vals = outs
		}
		if sd.index >= len(vals) {
			return nil
		}
		return vals[sd.index]
	}
	for k, sd := range s.syms {
		v := at(sd)
		if v == nil {
			continue
		}
		for j := sd.first; j < k; j++ {
			prev := s.syms[j]
			pv := at(prev)
			if prev.first != sd.first || pv == nil {
				continue
			}
			if got, want := v.dims()[sd.dim], pv.dims()[prev.dim]; got != want {
				return fmt.Errorf("%s %q: dim %d (%s) is %d, but %s %q has %s = %d", s.kindName(sd), s.infoOf(sd).Name, sd.dim, sd.name, got, s.kindName(prev), s.infoOf(prev).Name, sd.name, want)
			}
			break
		}
	}
	return nil
}

func (s *Session) kindName(sd symDim) string {
	if sd.output {
		return "output"
	}
	return "input"
}

func (s *Session) infoOf(sd symDim) TensorInfo {
	if sd.output {
		return s.outputs[sd.index]
	}
	return s.inputs[sd.index]
}

// fmtShape formats concrete dimensions like declared ones: [2, 4].
func fmtShape(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

var errClosed = errors.New("use of a closed binding or session")
