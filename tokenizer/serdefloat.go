package tokenizer

import (
	"math"
	"strconv"
)

// pow10 holds 1e0 … 1e308, the table serde_json scales by.
var pow10 = func() [309]float64 {
	var t [309]float64
	for i := range t {
		t[i], _ = strconv.ParseFloat("1e"+strconv.Itoa(i), 64)
	}
	return t
}()

// parseSerdeFloat reads a JSON number the way serde_json does without its
// float_roundtrip feature, as the Rust tokenizers library does: up to 19
// digits go into an integer that is converted to float64 and then
// multiplied or divided once by a power of ten. That is not always the
// closest float64 (it can be one unit off in the last place), and unigram
// scores must match Rust's bit for bit, since ties in the Viterbi search
// depend on them.
func parseSerdeFloat(s string) (float64, bool) {
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	if i >= len(s) || s[i] < '0' || s[i] > '9' {
		return 0, false
	}
	const maxU = math.MaxUint64
	var sig uint64
	exp := 0
	overflowed := false
	isFloat := false
	// serde_json stops taking digits once the integer would overflow: the
	// rest of the integer part scales the exponent, the rest of the
	// fraction is dropped.
	digits := func(afterPoint bool) int {
		n := 0
		overflowed = false
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			d := uint64(s[i] - '0')
			if !overflowed && (sig > maxU/10 || sig == maxU/10 && d > maxU%10) {
				overflowed = true
			}
			if !overflowed {
				sig = sig*10 + d
				if afterPoint {
					exp--
				}
			} else if !afterPoint {
				exp++
			}
			i++
			n++
		}
		return n
	}
	if s[i] == '0' {
		i++
	} else {
		digits(false)
	}
	if i < len(s) && s[i] == '.' {
		isFloat = true
		i++
		if digits(true) == 0 {
			return 0, false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		isFloat = true
		i++
		expNeg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		start := i
		e := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if e < 1<<24 {
				e = e*10 + int(s[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, false
		}
		if expNeg {
			e = -e
		}
		exp += e
	}
	if i != len(s) {
		return 0, false
	}
	if !isFloat && !overflowed {
		// Integers stay integers and convert exactly as Rust's `as f64`.
		f := float64(sig)
		if neg {
			f = -f
		}
		return f, true
	}
	f := float64(sig)
	for {
		if a := abs(exp); a < len(pow10) {
			if exp >= 0 {
				f *= pow10[a]
				if math.IsInf(f, 0) {
					return 0, false
				}
			} else {
				f /= pow10[a]
			}
			break
		}
		if f == 0 {
			break
		}
		if exp >= 0 {
			return 0, false
		}
		f /= 1e308
		exp += 308
	}
	if neg {
		f = -f
	}
	return f, true
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
