package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/migu-ml/migu/internal/half"
)

// The kernels below reproduce gguf-py's numpy arithmetic operation by
// operation, in float32: every f16 scale is widened first, products that
// numpy rounds before an addition are rounded here too (an explicit
// float32 conversion, which also stops the compiler from fusing them into
// an FMA), and sub-block scales are multiplied out before the quants, as
// numpy does. The results are bit-identical to gguf.quants.dequantize.

// Dequantize decodes len(dst) values of type t from src, which must hold
// exactly the bytes those values take. Large inputs are split across
// goroutines.
func Dequantize(dst []float32, t Type, src []byte) error {
	l, ok := layoutOf(t)
	if !ok {
		return fmt.Errorf("gguf: cannot dequantize %s (supported: %s)", t, supportedList)
	}
	if len(dst)%l.elems != 0 {
		return fmt.Errorf("gguf: %d values of %s are not a whole number of %d-value blocks", len(dst), t, l.elems)
	}
	blocks := len(dst) / l.elems
	if len(src) != blocks*l.bytes {
		return fmt.Errorf("gguf: %d values of %s take %d bytes, got %d", len(dst), t, blocks*l.bytes, len(src))
	}
	kernel := dequantKernels[t]
	parallel(blocks, l.elems, func(lo, hi int) {
		kernel(dst[lo*l.elems:hi*l.elems], src[lo*l.bytes:hi*l.bytes])
	})
	return nil
}

// dequantKernels decode whole blocks: dst holds exactly the values of the
// blocks in src.
var dequantKernels = map[Type]func(dst []float32, src []byte){
	F32:  dequantF32,
	F16:  dequantF16,
	BF16: dequantBF16,
	Q8_0: dequantQ8_0,
	Q4_0: dequantQ4_0,
	Q4_1: dequantQ4_1,
	Q5_0: dequantQ5_0,
	Q5_1: dequantQ5_1,
	Q2_K: dequantQ2_K,
	Q3_K: dequantQ3_K,
	Q4_K: dequantQ4_K,
	Q5_K: dequantQ5_K,
	Q6_K: dequantQ6_K,
	Q8_K: dequantQ8_K,
}

// parallel runs fn over [0, n) blocks of elems values each, in chunks of at
// least 64K values spread over GOMAXPROCS goroutines.
func parallel(n, elems int, fn func(lo, hi int)) {
	grain := max(1, (1<<16)/elems)
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || n <= grain {
		fn(0, n)
		return
	}
	chunks := min(4*workers, (n+grain-1)/grain)
	size := (n + chunks - 1) / chunks
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += size {
		hi := min(lo+size, n)
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }

func dequantF32(dst []float32, src []byte) {
	if half.HostLittleEndian && len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(dst []float32, src []byte) {
	tab := half.F16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = tab[le16(src[2*i:])]
	}
}

func dequantBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(le16(src[2*i:])) << 16)
	}
}

// Q8_0: f16 scale d, 32 int8 quants; x = q·d.
func dequantQ8_0(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 32 {
		b := src[:34:34]
		out := dst[:32:32]
		d := tab[le16(b)]
		for j, q := range b[2:34] {
			out[j] = float32(int8(q)) * d
		}
		dst, src = dst[32:], src[34:]
	}
}

// Q4_0: f16 scale d, 16 bytes of nibbles (value j in the low nibble of
// byte j, value j+16 in its high nibble); x = d·(q−8).
func dequantQ4_0(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 32 {
		b := src[:18:18]
		out := dst[:32:32]
		d := tab[le16(b)]
		for j, q := range b[2:18] {
			out[j] = d * float32(int32(q&0x0f)-8)
			out[j+16] = d * float32(int32(q>>4)-8)
		}
		dst, src = dst[32:], src[18:]
	}
}

// Q4_1: f16 scale d and minimum m, nibbles as Q4_0; x = d·q + m.
func dequantQ4_1(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 32 {
		b := src[:20:20]
		out := dst[:32:32]
		d, m := tab[le16(b)], tab[le16(b[2:])]
		for j, q := range b[4:20] {
			out[j] = float32(d*float32(q&0x0f)) + m
			out[j+16] = float32(d*float32(q>>4)) + m
		}
		dst, src = dst[32:], src[20:]
	}
}

// Q5_0: f16 scale d, a 32-bit word of fifth bits (bit j for value j),
// nibbles as Q4_0; x = d·(q−16).
func dequantQ5_0(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 32 {
		b := src[:22:22]
		out := dst[:32:32]
		d := tab[le16(b)]
		qh := binary.LittleEndian.Uint32(b[2:])
		for j, q := range b[6:22] {
			lo := int32(q&0x0f) | int32(qh>>j&1)<<4
			hi := int32(q>>4) | int32(qh>>(j+16)&1)<<4
			out[j] = d * float32(lo-16)
			out[j+16] = d * float32(hi-16)
		}
		dst, src = dst[32:], src[22:]
	}
}

// Q5_1: f16 scale d and minimum m, fifth bits and nibbles as Q5_0;
// x = d·q + m.
func dequantQ5_1(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 32 {
		b := src[:24:24]
		out := dst[:32:32]
		d, m := tab[le16(b)], tab[le16(b[2:])]
		qh := binary.LittleEndian.Uint32(b[4:])
		for j, q := range b[8:24] {
			lo := uint32(q&0x0f) | (qh>>j&1)<<4
			hi := uint32(q>>4) | (qh>>(j+16)&1)<<4
			out[j] = float32(d*float32(lo)) + m
			out[j+16] = float32(d*float32(hi)) + m
		}
		dst, src = dst[32:], src[24:]
	}
}

// Q2_K: 256 values in 16 sub-blocks of 16. Bytes 0–15 hold each sub-block's
// 4-bit scale (low nibble) and 4-bit minimum (high nibble), 16–79 the 2-bit
// quants, 80 the f16 d and 82 the f16 dmin; x = (d·sc)·q − dmin·m.
func dequantQ2_K(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 256 {
		b := src[:84:84]
		out := dst[:256:256]
		d, dmin := tab[le16(b[80:])], tab[le16(b[82:])]
		qs := b[16:80]
		for sub := range 16 {
			sc := b[sub]
			dl := d * float32(sc&0x0f)
			ml := dmin * float32(sc>>4)
			// Value e = 16·sub + i sits in byte 32·(e/128) + e%32 at bit
			// 2·((e%128)/32).
			base := 32*(sub/8) + 16*(sub%2)
			shift := 2 * ((sub % 8) / 2)
			o := out[16*sub : 16*sub+16]
			for i := range o {
				q := qs[base+i] >> shift & 3
				o[i] = float32(dl*float32(q)) - ml
			}
		}
		dst, src = dst[256:], src[84:]
	}
}

// Q3_K: 256 values in 16 sub-blocks of 16. Bytes 0–31 hold the high-bit
// mask, 32–95 the low 2 bits, 96–107 sixteen 6-bit signed scales, 108 the
// f16 d; x = (d·(sc−32))·(q − 4·(1−h)).
func dequantQ3_K(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 256 {
		b := src[:110:110]
		out := dst[:256:256]
		hmask, qs, scales := b[0:32], b[32:96], b[96:108]
		d := tab[le16(b[108:])]
		for sub := range 16 {
			lo := scales[sub%8]
			if sub >= 8 {
				lo >>= 4
			}
			hi := scales[8+sub%4] >> (2 * (sub / 4)) & 3
			sc := int32(lo&0x0f|hi<<4) - 32
			dl := d * float32(sc)
			base := 32*(sub/8) + 16*(sub%2)
			shift := 2 * ((sub % 8) / 2)
			hbit := sub / 2 // value e uses bit e/32 of hmask[e%32]
			q16 := qs[base : base+16]
			h16 := hmask[16*(sub%2) : 16*(sub%2)+16]
			o := out[16*sub : 16*sub+16]
			for i := range o {
				q := int32(q16[i]>>shift&3) - 4 + 4*int32(h16[i]>>hbit&1)
				o[i] = dl * float32(q)
			}
		}
		dst, src = dst[256:], src[110:]
	}
}

// scaleMinK4 unpacks the eight 6-bit scales and minimums of a Q4_K or
// Q5_K block from its 12 scale bytes.
func scaleMinK4(s []byte) (sc, mn [8]uint8) {
	s = s[:12:12]
	for j := range 4 {
		sc[j] = s[j] & 0x3f
		mn[j] = s[4+j] & 0x3f
		sc[4+j] = s[8+j]&0x0f | (s[j]>>2)&0x30
		mn[4+j] = s[8+j]>>4 | (s[4+j]>>2)&0x30
	}
	return sc, mn
}

// Q4_K: 256 values in 8 sub-blocks of 32. f16 d and dmin, 12 bytes of 6-bit
// scales and minimums, then 128 bytes of nibbles (sub-block 2c in the low
// nibbles of bytes 32c…32c+31, 2c+1 in their high nibbles);
// x = (d·sc)·q − dmin·m.
func dequantQ4_K(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 256 {
		b := src[:144:144]
		out := dst[:256:256]
		d, dmin := tab[le16(b)], tab[le16(b[2:])]
		sc, mn := scaleMinK4(b[4:16])
		qs := b[16:144]
		for sub := range 8 {
			dl := d * float32(sc[sub])
			ml := dmin * float32(mn[sub])
			q32 := qs[32*(sub/2) : 32*(sub/2)+32]
			shift := 4 * (sub % 2)
			o := out[32*sub : 32*sub+32]
			for i, q := range q32 {
				o[i] = float32(dl*float32(q>>shift&0x0f)) - ml
			}
		}
		dst, src = dst[256:], src[144:]
	}
}

// Q5_K: Q4_K plus 32 bytes of fifth bits (bit j of byte i for value i of
// sub-block j) between the scales and the nibbles.
func dequantQ5_K(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 256 {
		b := src[:176:176]
		out := dst[:256:256]
		d, dmin := tab[le16(b)], tab[le16(b[2:])]
		sc, mn := scaleMinK4(b[4:16])
		qh, qs := b[16:48], b[48:176]
		for sub := range 8 {
			dl := d * float32(sc[sub])
			ml := dmin * float32(mn[sub])
			q32 := qs[32*(sub/2) : 32*(sub/2)+32]
			shift := 4 * (sub % 2)
			o := out[32*sub : 32*sub+32]
			for i, q := range q32 {
				v := q>>shift&0x0f | (qh[i]>>sub&1)<<4
				o[i] = float32(dl*float32(v)) - ml
			}
		}
		dst, src = dst[256:], src[176:]
	}
}

// Q6_K: 256 values in 16 sub-blocks of 16. 128 bytes of low nibbles, 64 of
// high 2-bit pairs, 16 int8 scales, the f16 d; x = (d·sc)·(q−32). Within
// each half of 128 values, value r takes its nibble from byte r%64 (high
// nibble when r ≥ 64) and its high bits from byte r%32 at bit 2·(r/32).
func dequantQ6_K(dst []float32, src []byte) {
	tab := half.F16Table()
	for len(dst) >= 256 {
		b := src[:210:210]
		out := dst[:256:256]
		d := tab[le16(b[208:])]
		for sub := range 16 {
			h, r0 := sub/8, 16*(sub%8)
			dl := d * float32(int8(b[192+sub]))
			ql := b[64*h+r0%64 : 64*h+r0%64+16]
			qh := b[128+32*h+r0%32 : 128+32*h+r0%32+16]
			lshift, hshift := 4*(r0/64), 2*(r0/32)
			o := out[16*sub : 16*sub+16]
			for i := range o {
				q := ql[i]>>lshift&0x0f | (qh[i]>>hshift&3)<<4
				o[i] = dl * float32(int32(q)-32)
			}
		}
		dst, src = dst[256:], src[210:]
	}
}

// Q8_K: float32 d, 256 int8 quants, 16 int16 block sums (unused here);
// x = d·q.
func dequantQ8_K(dst []float32, src []byte) {
	for len(dst) >= 256 {
		b := src[:292:292]
		out := dst[:256:256]
		d := math.Float32frombits(binary.LittleEndian.Uint32(b))
		for j, q := range b[4:260] {
			out[j] = d * float32(int8(q))
		}
		dst, src = dst[256:], src[292:]
	}
}
