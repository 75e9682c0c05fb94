package half

import (
	"math"
	"testing"
)

func TestF16Table(t *testing.T) {
	cases := []struct {
		bits uint16
		want float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x7bff, 65504},
		{0x0001, float32(math.Ldexp(1, -24))},
		{0x03ff, float32(math.Ldexp(1023, -24))},
		{0x0400, float32(math.Ldexp(1, -14))},
		{0x3555, 0.333251953125},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	}
	for _, c := range cases {
		if got := F16ToF32(c.bits); got != c.want {
			t.Errorf("F16ToF32(%#04x) = %v, want %v", c.bits, got, c.want)
		}
		if got := F32ToF16(c.want); got != c.bits {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", c.want, got, c.bits)
		}
	}
	if !math.IsNaN(float64(F16ToF32(0x7e00))) || F32ToF16(float32(math.NaN()))&0x7c00 != 0x7c00 {
		t.Error("NaN does not survive")
	}
}

// Every binary16 value must survive widen-then-narrow unchanged.
func TestF16RoundTripAll(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := F32ToF16(f); got != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, got)
		}
	}
}

func TestF16RoundsToNearestEven(t *testing.T) {
	// 1 + 2^-11 lies exactly between 1 and the next half (1 + 2^-10): ties go to even (1).
	if got := F32ToF16(1 + float32(math.Ldexp(1, -11))); got != 0x3c00 {
		t.Errorf("tie rounded to %#04x", got)
	}
	// 1 + 3·2^-11 lies between 1+2^-10 (odd) and 1+2^-9 (even): goes up.
	if got := F32ToF16(1 + 3*float32(math.Ldexp(1, -11))); got != 0x3c02 {
		t.Errorf("tie rounded to %#04x", got)
	}
	if got := F32ToF16(70000); got != 0x7c00 {
		t.Errorf("overflow gave %#04x", got)
	}
}

func TestBF16(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToF32(h)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BF16ToF32(F32ToBF16(f)))) {
				t.Fatalf("NaN %#04x lost", h)
			}
			continue
		}
		if got := F32ToBF16(f); got != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, got)
		}
	}
	if got := F32ToBF16(math.Float32frombits(0x3f808000)); got != 0x3f80 { // tie to even
		t.Errorf("tie gave %#04x", got)
	}
	if got := F32ToBF16(math.Float32frombits(0x3f818000)); got != 0x3f82 {
		t.Errorf("tie gave %#04x", got)
	}
}
