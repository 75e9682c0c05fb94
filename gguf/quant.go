package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/migu-ml/migu/internal/half"
)

// Quantize encodes src as type t: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 or
// Q5_1; len(src) must be a whole number of blocks. The bytes equal
// gguf.quants.quantize's (llama.cpp's Python quantizer): the same float32
// operations in the same order, its float64 detour for Q4_0 and Q5_0,
// rounding half away from zero for Q8_0, and numpy's conversions to f16
// and to integers, including what they do with infinities and NaN.
func Quantize(t Type, src []float32) ([]byte, error) {
	kernel, ok := quantKernels[t]
	if !ok {
		return nil, fmt.Errorf("gguf: cannot quantize to %s (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)", t)
	}
	l, _ := layoutOf(t)
	if len(src)%l.elems != 0 {
		return nil, fmt.Errorf("gguf: %d values are not a whole number of %d-value %s blocks", len(src), l.elems, t)
	}
	blocks := len(src) / l.elems
	dst := make([]byte, blocks*l.bytes)
	parallel(blocks, l.elems, func(lo, hi int) {
		kernel(dst[lo*l.bytes:hi*l.bytes], src[lo*l.elems:hi*l.elems])
	})
	return dst, nil
}

// quantKernels encode whole blocks: src holds exactly the values of the
// blocks in dst.
var quantKernels = map[Type]func(dst []byte, src []float32){
	F32: func(dst []byte, src []float32) {
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	},
	F16: func(dst []byte, src []float32) {
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], f32ToF16(v))
		}
	},
	BF16: func(dst []byte, src []float32) {
		// gguf-py quiets NaN by setting bit 22 and rounds to nearest even,
		// exactly as half.F32ToBF16 does.
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], half.F32ToBF16(v))
		}
	},
	Q8_0: quantQ8_0,
	Q4_0: func(dst []byte, src []float32) { quantSymmetric(dst, src, 18, 8, 15) },
	Q5_0: func(dst []byte, src []float32) { quantSymmetric(dst, src, 22, 16, 31) },
	Q4_1: func(dst []byte, src []float32) { quantAffine(dst, src, 20, 15) },
	Q5_1: func(dst []byte, src []float32) { quantAffine(dst, src, 24, 31) },
}

// f32ToF16 narrows as numpy's astype(float16) does: round to nearest even
// (as half.F32ToF16), but a NaN keeps the top bits of its payload without
// being quieted, becoming 0x7c01 when they are all zero.
func f32ToF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7f800000 == 0x7f800000 && b&0x007fffff != 0 {
		h := uint16(0x7c00 + (b&0x007fffff)>>13)
		if h == 0x7c00 {
			h++
		}
		return uint16(b>>16)&0x8000 | h
	}
	return half.F32ToF16(v)
}

// toUint8 is numpy's cast of an integral float32 to uint8 (and, read as
// int8, to int8) on x86-64: through a 32-bit integer, so NaN, infinities
// and values out of int32 range become 0 and the rest wrap modulo 256.
func toUint8(v float32) uint8 {
	if !(v > -2147483648 && v < 2147483648) {
		return 0
	}
	return uint8(int32(v))
}

func truncf(v float32) float32 { return float32(math.Trunc(float64(v))) }

func absf(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// inverse is gguf-py's np.where(d == 0, 0, 1/d).
func inverse(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

// Q8_0: d = max|x|/127, q = round(x/d) with ties away from zero.
func quantQ8_0(dst []byte, src []float32) {
	for len(src) >= 32 {
		x := src[:32:32]
		out := dst[:34:34]
		amax := float32(0)
		for _, v := range x {
			a := absf(v)
			if a != a { // numpy's max propagates NaN
				amax = a
				break
			}
			amax = max(amax, a)
		}
		d := amax / 127
		id := inverse(d)
		binary.LittleEndian.PutUint16(out, f32ToF16(d))
		for j, v := range x {
			// math.Round of the float32 product is exactly gguf-py's np_roundf.
			out[2+j] = toUint8(float32(math.Round(float64(v * id))))
		}
		dst, src = dst[34:], src[32:]
	}
}

// quantSymmetric is Q4_0 (offset 8, top 15) and Q5_0 (offset 16, top 31):
// d = x_max/−offset, where x_max is the value of largest magnitude (the
// first of equals), and q = trunc(x·(1/d) + offset + ½) computed in float64
// and narrowed to float32 before the truncation, as gguf-py does.
func quantSymmetric(dst []byte, src []float32, blockBytes int, offset float32, top uint8) {
	var q [32]uint8
	for len(src) >= 32 {
		x := src[:32:32]
		out := dst[:blockBytes:blockBytes]
		imax, best := 0, absf(x[0])
		for j := 1; j < 32 && best == best; j++ {
			if a := absf(x[j]); !(a <= best) { // numpy's argmax: first NaN, else first maximum
				imax, best = j, a
			}
		}
		d := x[imax] / -offset
		id := float64(inverse(d))
		add := float64(offset) + 0.5
		for j, v := range x {
			p := float64(float64(v) * id)
			q[j] = min(toUint8(truncf(float32(p+add))), top)
		}
		binary.LittleEndian.PutUint16(out, f32ToF16(d))
		qs := out[blockBytes-16:]
		for j := range 16 {
			qs[j] = q[j]&0x0f | q[j+16]<<4
		}
		if top == 31 {
			binary.LittleEndian.PutUint32(out[2:], highBits(&q))
		}
		dst, src = dst[blockBytes:], src[32:]
	}
}

// quantAffine is Q4_1 (top 15) and Q5_1 (top 31): d = (max−min)/top and
// q = trunc((x−min)·(1/d) + ½), all in float32.
func quantAffine(dst []byte, src []float32, blockBytes int, top uint8) {
	var q [32]uint8
	for len(src) >= 32 {
		x := src[:32:32]
		out := dst[:blockBytes:blockBytes]
		hi, lo := extremes(x)
		d := (hi - lo) / float32(top)
		id := inverse(d)
		for j, v := range x {
			p := float32((v - lo) * id)
			q[j] = min(toUint8(truncf(p+0.5)), top)
		}
		binary.LittleEndian.PutUint16(out, f32ToF16(d))
		binary.LittleEndian.PutUint16(out[2:], f32ToF16(lo))
		qs := out[blockBytes-16:]
		for j := range 16 {
			qs[j] = q[j]&0x0f | q[j+16]<<4
		}
		if top == 31 {
			binary.LittleEndian.PutUint32(out[4:], highBits(&q))
		}
		dst, src = dst[blockBytes:], src[32:]
	}
}

// extremes is numpy's max and min of a block: NaN when any value is NaN;
// otherwise a scan in which a later value equal to the extreme replaces it,
// which settles the sign of a zero extreme as numpy's reduction does.
func extremes(x []float32) (hi, lo float32) {
	hi, lo = x[0], x[0]
	for _, v := range x {
		if v != v {
			return v, v
		}
		if v >= hi {
			hi = v
		}
		if v <= lo {
			lo = v
		}
	}
	return hi, lo
}

// highBits packs bit 4 of each quant into a word, value j at bit j.
func highBits(q *[32]uint8) uint32 {
	var h uint32
	for j, v := range q {
		h |= uint32(v>>4&1) << j
	}
	return h
}
