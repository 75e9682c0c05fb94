package shapes

import (
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/onnx"
)

// Symbolic sizes are integer polynomials over named atoms: graph-input dim
// params such as "batch" and fresh "unk_N" atoms for sizes nothing
// determines. A polynomial is kept in one canonical form, so two sizes with
// the same printed form are the same polynomial and therefore equal at run
// time; the converse does not hold (inference only ever proves equality).

// Limits that keep expressions small; an operation that would exceed them
// gives up and the caller uses a fresh atom instead.
const (
	maxExprTerms  = 8
	maxExprDegree = 8
)

// term is coef times the product of atoms (sorted; a repeated atom is a power).
type term struct {
	coef  int64
	atoms []string
}

// expr is a polynomial in canonical form: terms ordered by degree (highest
// first) then by atoms, like terms merged, no zero coefficients. key is its
// printed form.
type expr struct {
	terms []term
	key   string
}

// constExpr returns the constant n.
func constExpr(n int64) *expr {
	if n == 0 {
		return &expr{key: "0"}
	}
	return &expr{terms: []term{{coef: n}}, key: strconv.FormatInt(n, 10)}
}

// atomExpr returns the polynomial made of one atom.
func atomExpr(name string) *expr {
	e, _ := newExpr([]term{{coef: 1, atoms: []string{name}}})
	return e
}

// constant returns the value of a constant expression.
func (e *expr) constant() (int64, bool) {
	switch {
	case len(e.terms) == 0:
		return 0, true
	case len(e.terms) == 1 && len(e.terms[0].atoms) == 0:
		return e.terms[0].coef, true
	}
	return 0, false
}

// isConst reports whether e is the constant n.
func (e *expr) isConst(n int64) bool {
	v, ok := e.constant()
	return ok && v == n
}

// atom returns the name of an expression that is a single atom.
func (e *expr) atom() (string, bool) {
	if len(e.terms) == 1 && e.terms[0].coef == 1 && len(e.terms[0].atoms) == 1 {
		return e.terms[0].atoms[0], true
	}
	return "", false
}

// dim converts e to the public form: a fixed Dim for constants, else a
// symbol named by the canonical key.
func (e *expr) dim() onnx.Dim {
	if v, ok := e.constant(); ok {
		return onnx.D(v)
	}
	return onnx.Sym(e.key)
}

// newExpr puts terms into canonical form; it fails when coefficients
// overflow or the result exceeds the size limits.
func newExpr(terms []term) (*expr, bool) {
	for i := range terms {
		if !slices.IsSorted(terms[i].atoms) {
			terms[i].atoms = slices.Clone(terms[i].atoms)
			slices.Sort(terms[i].atoms)
		}
	}
	slices.SortStableFunc(terms, compareTerms)
	out := terms[:0]
	for _, t := range terms {
		if n := len(out); n > 0 && slices.Equal(out[n-1].atoms, t.atoms) {
			c, ok := addInt(out[n-1].coef, t.coef)
			if !ok {
				return nil, false
			}
			out[n-1].coef = c
			continue
		}
		out = append(out, t)
	}
	kept := out[:0]
	for _, t := range out {
		if t.coef != 0 {
			if len(t.atoms) > maxExprDegree {
				return nil, false
			}
			kept = append(kept, t)
		}
	}
	if len(kept) > maxExprTerms {
		return nil, false
	}
	e := &expr{terms: kept}
	e.key = e.format()
	return e, true
}

// compareTerms orders higher degrees first, then atoms lexicographically.
func compareTerms(a, b term) int {
	if len(a.atoms) != len(b.atoms) {
		return len(b.atoms) - len(a.atoms)
	}
	return slices.Compare(a.atoms, b.atoms)
}

// format prints e as e.g. "batch*seq", "64*batch", "seq-1" or "seq*seq+2".
// Atoms that are not plain identifiers are quoted, so the printed form is
// injective.
func (e *expr) format() string {
	if len(e.terms) == 0 {
		return "0"
	}
	var b strings.Builder
	for i, t := range e.terms {
		c := t.coef
		if c < 0 {
			b.WriteByte('-')
			c = -c
		} else if i > 0 {
			b.WriteByte('+')
		}
		if c != 1 || len(t.atoms) == 0 {
			b.WriteString(strconv.FormatUint(uint64(c), 10))
			if len(t.atoms) > 0 {
				b.WriteByte('*')
			}
		}
		for j, a := range t.atoms {
			if j > 0 {
				b.WriteByte('*')
			}
			b.WriteString(atomString(a))
		}
	}
	return b.String()
}

// atomString prints an atom, quoting names that could be mistaken for
// arithmetic.
func atomString(a string) string {
	if plainAtom(a) {
		return a
	}
	return strconv.Quote(a)
}

func plainAtom(a string) bool {
	if a == "" {
		return false
	}
	for i, r := range a {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '.' || r == ':'):
		default:
			return false
		}
	}
	return true
}

func addExpr(a, b *expr) (*expr, bool) {
	terms := make([]term, 0, len(a.terms)+len(b.terms))
	terms = append(append(terms, a.terms...), b.terms...)
	return newExpr(terms)
}

func negExpr(a *expr) (*expr, bool) {
	terms := make([]term, len(a.terms))
	for i, t := range a.terms {
		if t.coef == minInt64 {
			return nil, false
		}
		terms[i] = term{coef: -t.coef, atoms: t.atoms}
	}
	return newExpr(terms)
}

func subExpr(a, b *expr) (*expr, bool) {
	nb, ok := negExpr(b)
	if !ok {
		return nil, false
	}
	return addExpr(a, nb)
}

func mulExpr(a, b *expr) (*expr, bool) {
	if len(a.terms)*len(b.terms) > 4*maxExprTerms {
		return nil, false
	}
	terms := make([]term, 0, len(a.terms)*len(b.terms))
	for _, x := range a.terms {
		for _, y := range b.terms {
			c, ok := mulInt(x.coef, y.coef)
			if !ok || len(x.atoms)+len(y.atoms) > maxExprDegree {
				return nil, false
			}
			atoms := make([]string, 0, len(x.atoms)+len(y.atoms))
			atoms = append(append(atoms, x.atoms...), y.atoms...)
			slices.Sort(atoms)
			terms = append(terms, term{coef: c, atoms: atoms})
		}
	}
	return newExpr(terms)
}

// divExpr divides exactly: it succeeds when b is a single term that divides
// every term of a, or when a and b are the same polynomial.
func divExpr(a, b *expr) (*expr, bool) {
	if a.key == b.key && len(a.terms) > 0 {
		return constExpr(1), true
	}
	if len(b.terms) != 1 {
		return nil, false
	}
	d := b.terms[0]
	terms := make([]term, len(a.terms))
	for i, t := range a.terms {
		if d.coef == 0 || t.coef%d.coef != 0 || (d.coef == -1 && t.coef == minInt64) {
			return nil, false
		}
		rest, ok := removeAtoms(t.atoms, d.atoms)
		if !ok {
			return nil, false
		}
		terms[i] = term{coef: t.coef / d.coef, atoms: rest}
	}
	return newExpr(terms)
}

// removeAtoms removes the multiset sub from the sorted multiset all.
func removeAtoms(all, sub []string) ([]string, bool) {
	out := make([]string, 0, len(all))
	j := 0
	for _, a := range all {
		if j < len(sub) && sub[j] == a {
			j++
			continue
		}
		out = append(out, a)
	}
	return out, j == len(sub)
}

// evalExpr computes e from atom sizes; ok is false when an atom has no size
// or the arithmetic overflows.
func evalExpr(e *expr, sizes map[string]int64) (int64, bool) {
	var sum int64
	for _, t := range e.terms {
		v := t.coef
		for _, a := range t.atoms {
			s, found := sizes[a]
			if !found {
				return 0, false
			}
			var ok bool
			if v, ok = mulInt(v, s); !ok {
				return 0, false
			}
		}
		var ok bool
		if sum, ok = addInt(sum, v); !ok {
			return 0, false
		}
	}
	return sum, true
}

// minValue bounds e from below when every atom is known to be at least 1
// (positive reports which are) and every non-constant term has a positive
// coefficient: the minimum is then taken with all atoms at 1.
func minValue(e *expr, positive func(string) bool) (int64, bool) {
	var sum int64
	for _, t := range e.terms {
		if len(t.atoms) > 0 {
			if t.coef < 0 {
				return 0, false
			}
			for _, a := range t.atoms {
				if !positive(a) {
					return 0, false
				}
			}
		}
		var ok bool
		if sum, ok = addInt(sum, t.coef); !ok {
			return 0, false
		}
	}
	return sum, true
}

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

func addInt(a, b int64) (int64, bool) {
	s := a + b
	if (s > a) != (b > 0) {
		return 0, false
	}
	return s, true
}

func mulInt(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	neg := (a < 0) != (b < 0)
	hi, lo := bits.Mul64(absUint(a), absUint(b))
	if hi != 0 || (!neg && lo > maxInt64) || (neg && lo > 1<<63) {
		return 0, false
	}
	if neg {
		return int64(-lo), true
	}
	return int64(lo), true
}

func absUint(a int64) uint64 {
	if a < 0 {
		return uint64(-a)
	}
	return uint64(a)
}
