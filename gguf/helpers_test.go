package gguf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// writeTemp stores content under a fresh temporary directory.
func writeTemp(t testing.TB, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// builder assembles GGUF bytes field by field, so tests can write files
// that Writer would refuse to.
type builder struct{ b []byte }

func (b *builder) raw(p ...byte) *builder { b.b = append(b.b, p...); return b }
func (b *builder) u8(v uint8) *builder    { return b.raw(v) }
func (b *builder) u32(v uint32) *builder {
	b.b = binary.LittleEndian.AppendUint32(b.b, v)
	return b
}
func (b *builder) u64(v uint64) *builder {
	b.b = binary.LittleEndian.AppendUint64(b.b, v)
	return b
}
func (b *builder) str(s string) *builder { return b.u64(uint64(len(s))).raw([]byte(s)...) }

// header starts a file with the magic, version 3 and the two counts.
func header(tensors, kvs uint64) *builder {
	return (&builder{}).raw('G', 'G', 'U', 'F').u32(3).u64(tensors).u64(kvs)
}

// tensorInfo appends one tensor info with GGUF-order dims.
func (b *builder) tensorInfo(name string, t Type, offset uint64, dims ...uint64) *builder {
	b.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		b.u64(d)
	}
	return b.u32(uint32(t)).u64(offset)
}

// padTo pads with zeros to a multiple of align.
func (b *builder) padTo(align int) *builder {
	for len(b.b)%align != 0 {
		b.b = append(b.b, 0)
	}
	return b
}

// canonKV renders a KV the way the Python scripts do, so the two sides can
// be compared as JSON: scalars as strings (floats as their bits), arrays as
// {"e": element type, "v": items}.
func canonKV(kv KV) any {
	return map[string]any{"k": kv.Key, "t": float64(kv.Type), "v": canonValue(kv.Type, kv.ElemType, kv.Value)}
}

func canonValue(t, et ValueType, v any) any {
	if t != Array {
		return canonScalar(v)
	}
	rv := reflect.ValueOf(v)
	items := make([]any, 0, rv.Len())
	for i := range rv.Len() {
		e := rv.Index(i).Interface()
		if et == Array {
			inner, _ := sliceElemType(e)
			items = append(items, canonValue(Array, inner, e))
		} else {
			items = append(items, canonScalar(e))
		}
	}
	return map[string]any{"e": float64(et), "v": items}
}

func canonScalar(v any) string {
	switch x := v.(type) {
	case float32:
		return fmt.Sprintf("f32:%08x", math.Float32bits(x))
	case float64:
		return fmt.Sprintf("f64:%016x", math.Float64bits(x))
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// sameJSON compares a Go value with decoded JSON after a round trip
// through encoding/json.
func sameJSON(t *testing.T, what string, got any, want any) {
	t.Helper()
	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var norm any
	if err := json.Unmarshal(raw, &norm); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(norm, want) {
		g, _ := json.Marshal(norm)
		w, _ := json.Marshal(want)
		t.Errorf("%s differ\n got: %.2000s\nwant: %.2000s", what, g, w)
	}
}

// sameBits compares float32 values bit for bit, any NaN matching any NaN.
func sameBits(got, want []float32) (int, bool) {
	if len(got) != len(want) {
		return -1, false
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
			return i, false
		}
	}
	return 0, true
}

// floatsFromBytes decodes little-endian float32s.
func floatsFromBytes(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func floatsToBytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// randomBlocks makes n blocks of type t with random quants and finite,
// modest f16 (or, for Q8_K, float32) scales, the way real files look.
func randomBlocks(rng *rand.Rand, t Type, n int) []byte {
	_, size, _ := t.BlockSize()
	b := make([]byte, n*size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	f16 := func(p []byte) {
		binary.LittleEndian.PutUint16(p, f32ToF16(float32(rng.NormFloat64()*0.01)))
	}
	for k := range n {
		blk := b[k*size : (k+1)*size]
		switch t {
		case Q2_K:
			f16(blk[80:])
			f16(blk[82:])
		case Q3_K:
			f16(blk[108:])
		case Q4_K, Q5_K:
			f16(blk[0:])
			f16(blk[2:])
		case Q6_K:
			f16(blk[208:])
		case Q8_K:
			binary.LittleEndian.PutUint32(blk, math.Float32bits(float32(rng.NormFloat64()*0.01)))
		case Q4_0, Q5_0, Q8_0:
			f16(blk)
		case Q4_1, Q5_1:
			f16(blk)
			f16(blk[2:])
		case F16:
			f16(blk)
		case F32:
			binary.LittleEndian.PutUint32(blk, math.Float32bits(float32(rng.NormFloat64())))
		case BF16:
			binary.LittleEndian.PutUint16(blk, uint16(math.Float32bits(float32(rng.NormFloat64()))>>16))
		}
	}
	return b
}

func nan32() float32   { return float32(math.NaN()) }
func negZero() float32 { return float32(math.Copysign(0, -1)) }
