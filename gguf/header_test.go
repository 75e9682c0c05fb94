package gguf

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// kvFile is a file with no tensors and the given metadata entries, each
// appended by its function.
func kvFile(entries ...func(*builder)) []byte {
	b := header(0, uint64(len(entries)))
	for _, e := range entries {
		e(b)
	}
	return b.b
}

// oneTensor is a file holding a single tensor info and data bytes of
// padding plus size bytes.
func oneTensor(name string, t Type, offset uint64, size int, dims ...uint64) []byte {
	b := header(1, 0).tensorInfo(name, t, offset, dims...).padTo(DefaultAlignment)
	return append(b.b, make([]byte, size)...)
}

func TestOpenMalformed(t *testing.T) {
	nested := func(depth int) func(*builder) {
		return func(b *builder) {
			b.str("deep").u32(uint32(Array))
			for range depth {
				b.u32(uint32(Array)).u64(1)
			}
			b.u32(uint32(Uint8)).u64(0)
		}
	}
	twoTensors := func(offA, offB uint64, dataLen int) []byte {
		b := header(2, 0).tensorInfo("a", F32, offA, 8).tensorInfo("b", F32, offB, 8).padTo(DefaultAlignment)
		return append(b.b, make([]byte, dataLen)...)
	}
	cases := []struct {
		name  string
		file  []byte
		field string // the part of the message that names where
		want  string
	}{
		{"empty file", nil, "header", "file is 0 bytes, too short for a GGUF header"},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), "header", `magic is "GGML", want "GGUF" (not a GGUF file)`},
		{"truncated version", []byte("GGUF\x03"), "header", "version needs 4 bytes at offset 4, past the end of the 5-byte file"},
		{"version 1", (&builder{}).raw('G', 'G', 'U', 'F').u32(1).b, "header", "GGUF version 1 is not supported"},
		{"version 4", (&builder{}).raw('G', 'G', 'U', 'F').u32(4).u64(0).u64(0).b, "header", "unknown GGUF version 4"},
		{"big endian", (&builder{}).raw('G', 'G', 'U', 'F').u32(3 << 24).u64(0).u64(0).b, "header", "big-endian GGUF file"},
		{"truncated counts", header(0, 0).b[:20], "header", "metadata key count needs 8 bytes"},
		{"absurd key count", header(0, 1<<40).b, "header", "metadata key count 1099511627776 is more than the remaining 0 bytes can hold"},
		{"absurd tensor count", append(header(1<<60, 0).b, make([]byte, 100)...), "header", "tensor count 1152921504606846976 is more than the remaining 100 bytes"},
		{"key past end", append(header(0, 1).u64(1<<40).b, make([]byte, 8)...), "metadata key 0", "key length 1099511627776 at offset 24 runs past the end of the 40-byte file"},
		{"unknown value type", kvFile(func(b *builder) { b.str("k").u32(13).u32(0) }), "key k", "unknown value type 13"},
		{"unknown element type", kvFile(func(b *builder) { b.str("arr").u32(uint32(Array)).u32(99).u64(0) }), "key arr", "unknown array element type 99"},
		{"absurd array length", kvFile(func(b *builder) { b.str("arr").u32(uint32(Array)).u32(uint32(Uint32)).u64(1 << 62).u32(0) }), "key arr", "array of 4611686018427387904 uint32 values at offset 43 is longer than the remaining 4 bytes"},
		{"absurd string array", kvFile(func(b *builder) { b.str("toks").u32(uint32(Array)).u32(uint32(String)).u64(1 << 40).str("a") }), "key toks", "array of 1099511627776 string values"},
		{"string past end", kvFile(func(b *builder) { b.str("s").u32(uint32(String)).u64(5).raw('a', 'b') }), "key s", "string length 5 at offset 37 runs past the end of the 47-byte file"},
		{"element string past end", kvFile(func(b *builder) {
			b.str("toks").u32(uint32(Array)).u32(uint32(String)).u64(2).str("ok").u64(9).raw('x')
		}), "key toks", "element 1 length 9 at offset"},
		{"truncated uint64", append(kvFile(func(b *builder) { b.str("n").u32(uint32(Uint64)) }), 1, 2, 3), "key n", "uint64 value needs 8 bytes at offset 37, past the end of the 40-byte file"},
		{"bool not 0 or 1", kvFile(func(b *builder) { b.str("flag").u32(uint32(Bool)).u8(2) }), "key flag", "bool value 2 is neither 0 nor 1"},
		{"bool array", kvFile(func(b *builder) { b.str("flags").u32(uint32(Array)).u32(uint32(Bool)).u64(2).raw(1, 7) }), "key flags", "element 1: bool value 7"},
		{"nested too deep", kvFile(nested(maxNesting)), "key deep" + strings.Repeat("[0]", maxNesting), "arrays nested more than 16 deep"},
		{"duplicate key", kvFile(func(b *builder) { b.str("k").u32(uint32(Uint8)).u8(1) }, func(b *builder) { b.str("k").u32(uint32(Int8)).u8(1) }), "key k", "appears twice in the metadata"},
		{"alignment type", kvFile(func(b *builder) { b.str(AlignmentKey).u32(uint32(Uint64)).u64(64) }), "key general.alignment", "is uint64, want uint32"},
		{"alignment not power of two", kvFile(func(b *builder) { b.str(AlignmentKey).u32(uint32(Uint32)).u32(48) }), "key general.alignment", "48 is not a power of two"},
		{"alignment zero", kvFile(func(b *builder) { b.str(AlignmentKey).u32(uint32(Uint32)).u32(0) }), "key general.alignment", "0 is not a power of two"},
		{"five dims", oneTensor("blk.0.w", F32, 0, 4, 1, 1, 1, 1, 1), "tensor blk.0.w", "has 5 dims; GGUF allows at most 4"},
		{"zero dim", oneTensor("w", F32, 0, 4, 4, 0), "tensor w", "dim 1 is 0"},
		{"dims overflow", oneTensor("w", F32, 0, 4, 1<<32, 1<<32), "tensor w", "dims [4294967296 4294967296] overflow 64 bits"},
		{"bytes overflow", oneTensor("w", F32, 0, 4, 1<<62), "tensor w", "take more than 2^63 bytes"},
		{"unknown type", oneTensor("blk.0.attn_q.weight", Type(42), 0, 4, 32), "tensor blk.0.attn_q.weight", "has ggml type 42, which migu cannot read (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)"},
		{"unsupported type", oneTensor("w", IQ2_XXS, 0, 66, 256), "tensor w", "has ggml type IQ2_XXS (16), which migu cannot read"},
		{"row not whole blocks", oneTensor("w", Q4_0, 0, 36, 33, 2), "tensor w", "row length (dim 0) 33 is not a multiple of the 32 values of a Q4_0 block"},
		{"truncated dims", header(1, 0).str("w").u32(4).u64(4).raw(1, 2, 3).b, "tensor w", "dim 1 needs 8 bytes at offset 45, past the end of the 48-byte file"},
		{"unaligned offset", oneTensor("w", F32, 4, 64, 4), "tensor w", "data offset 4 is not a multiple of the alignment 32"},
		{"data past end", oneTensor("w", F32, 0, 12, 4), "tensor w", "16 bytes of data at offset 0 run past the end of the 12-byte data section"},
		{"offset past end", oneTensor("w", F32, 1<<63, 16, 4), "tensor w", "at offset 9223372036854775808 run past the end"},
		{"data section missing", header(1, 0).tensorInfo("w", F32, 0, 4).b, "tensor w", "the data section would start at offset 64, past the end of the 57-byte file"},
		{"overlap", twoTensors(0, 0, 64), "tensor b", "data [0, 32) overlaps tensor a at [0, 32)"},
		{"duplicate tensor", append(header(2, 0).tensorInfo("w", F32, 0, 8).tensorInfo("w", F32, 32, 8).padTo(32).b, make([]byte, 64)...), "tensor w", "name appears twice (tensors 0 and 1)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, open := range []func() (*File, error){
				func() (*File, error) { return Parse("in-memory.gguf", c.file) },
				func() (*File, error) { return Open(writeTemp(t, "bad.gguf", c.file)) },
			} {
				f, err := open()
				if err == nil {
					f.Close()
					t.Fatalf("opened; want an error containing %q", c.want)
				}
				msg := err.Error()
				if !badinput.Is(err) || !errors.Is(err, ErrFormat) {
					t.Errorf("error is not bad input and ErrFormat: %v", err)
				}
				if !strings.Contains(msg, ".gguf: "+c.field+": ") || !strings.Contains(msg, c.want) {
					t.Errorf("error %q\nwant field %q and %q", msg, c.field, c.want)
				}
				if strings.Contains(msg, "\n") {
					t.Errorf("error is not one line: %q", msg)
				}
			}
		})
	}
}

// Files that are odd but valid: version 2, an empty file of metadata, a
// tensor without dims, gaps between tensors, trailing bytes.
func TestOpenUnusual(t *testing.T) {
	v2 := header(0, 0).b
	v2[4] = 2
	cases := []struct {
		name  string
		file  []byte
		check func(*File) bool
	}{
		{"version 2", v2, func(f *File) bool { return f.Version == 2 }},
		{"nested as deep as allowed", kvFile(func(b *builder) {
			b.str("deep").u32(uint32(Array))
			for range maxNesting - 1 {
				b.u32(uint32(Array)).u64(1)
			}
			b.u32(uint32(Uint8)).u64(1).u8(9)
		}), func(f *File) bool {
			v := f.KVs[0].Value
			for range maxNesting - 1 {
				v = v.([]any)[0]
			}
			return fmt.Sprint(v) == "[9]"
		}},
		{"no tensors, no padding", header(0, 0).b, func(f *File) bool { return len(f.Tensors) == 0 && f.Alignment == 32 }},
		{"scalar tensor", oneTensor("s", F32, 0, 4), func(f *File) bool {
			v, err := f.Float32("s")
			return err == nil && len(v) == 1 && len(f.Tensors[0].Shape()) == 0
		}},
		{"gap and trailing bytes", append(header(2, 0).tensorInfo("a", F16, 64, 2).tensorInfo("b", F16, 0, 2).padTo(32).b, make([]byte, 200)...), func(f *File) bool {
			return f.Tensors[0].Offset == 64 && f.DataOffset() == 96
		}},
		{"custom alignment", append(header(1, 1).str(AlignmentKey).u32(uint32(Uint32)).u32(256).tensorInfo("w", Q8_0, 256, 32).padTo(256).b, make([]byte, 256+34)...), func(f *File) bool {
			return f.Alignment == 256 && f.DataOffset() == 256
		}},
	}
	for _, c := range cases {
		f, err := Parse(c.name, c.file)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !c.check(f) {
			t.Errorf("%s: unexpected %+v", c.name, f)
		}
	}
}

func TestOpenMissingFile(t *testing.T) {
	_, err := Open(t.TempDir() + "/none.gguf")
	if !badinput.Is(err) || !strings.Contains(err.Error(), "none.gguf") {
		t.Errorf("Open(missing) = %v, want bad input naming the file", err)
	}
}

// The read-into-memory fallback reads what the mapping reads.
func TestOpenWithoutMmap(t *testing.T) {
	path := writeTemp(t, "w.gguf", oneTensor("w", F32, 0, 16, 4))
	tryMmap = false
	defer func() { tryMmap = true }()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, err := f.Float32("w"); err != nil || len(v) != 4 {
		t.Errorf("Float32 = %v, %v", v, err)
	}
}

func TestClosedAndMissingTensor(t *testing.T) {
	f, err := Open(writeTemp(t, "w.gguf", oneTensor("w", F32, 0, 16, 4)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Bytes("nope"); !errors.Is(err, ErrNotFound) || !badinput.Is(err) {
		t.Errorf("Bytes(missing) = %v, want ErrNotFound, bad input", err)
	}
	if err := f.ReadInto("w", make([]float32, 3)); err == nil || !strings.Contains(err.Error(), "has 4 values") {
		t.Errorf("ReadInto with 3 slots = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Float32("w"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Float32 after Close = %v", err)
	}
}

func TestAccessors(t *testing.T) {
	w := NewWriter()
	for _, kv := range []struct {
		key string
		v   any
	}{
		{"general.architecture", "llama"}, {"u8", uint8(7)}, {"i8", int8(-1)}, {"i32", int32(5)},
		{"u64.big", uint64(math.MaxUint64)}, {"f32", float32(0.5)}, {"f64", 1e-300}, {"bool", true},
		{"strs", []string{"a", "b"}}, {"f32s", []float32{1, 2}}, {"f64s", []float64{0.25}},
		{"i32s", []int32{-1, 2}}, {"u32s", []uint32{3, 4}}, {"u32s.big", []uint32{1 << 31}},
		{"i64s", []int64{-5, math.MinInt32}}, {"i64s.small", []int64{math.MinInt32 - 1}}, {"u8s", []uint8{9}},
	} {
		if err := w.Add(kv.key, kv.v); err != nil {
			t.Fatal(err)
		}
	}
	path := writeTemp(t, "x", nil)
	if err := w.Write(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Architecture() != "llama" {
		t.Errorf("Architecture() = %q", f.Architecture())
	}
	type result struct {
		v   any
		ok  bool
		err error
	}
	r := func(v any, ok bool, err error) result { return result{v, ok, err} }
	cases := []struct {
		name string
		got  result
		want any    // compared with %v
		bad  string // substring of the expected error, "" for none
	}{
		{"String", r(f.String("general.architecture")), "llama", ""},
		{"String absent", r(f.String("nope")), "", ""},
		{"String of uint8", r(f.String("u8")), "", "key u8 is uint8, want a string"},
		{"Uint of uint8", r(f.Uint("u8")), uint64(7), ""},
		{"Uint of int32", r(f.Uint("i32")), uint64(5), ""},
		{"Uint of negative", r(f.Uint("i8")), uint64(0), "key i8 is -1, want a non-negative integer"},
		{"Uint of float", r(f.Uint("f32")), uint64(0), "key f32 is float32, want an unsigned integer"},
		{"Int of int8", r(f.Int("i8")), int64(-1), ""},
		{"Int of huge uint64", r(f.Int("u64.big")), int64(0), "too large for a signed 64-bit integer"},
		{"Int of string", r(f.Int("general.architecture")), int64(0), "key general.architecture is string, want an integer"},
		{"Float of float32", r(f.Float("f32")), 0.5, ""},
		{"Float of float64", r(f.Float("f64")), 1e-300, ""},
		{"Float of int", r(f.Float("i8")), -1.0, ""},
		{"Float of bool", r(f.Float("bool")), 0.0, "key bool is bool, want a number"},
		{"Bool", r(f.Bool("bool")), true, ""},
		{"Bool of uint8", r(f.Bool("u8")), false, "want a bool"},
		{"Strings", r(f.Strings("strs")), []string{"a", "b"}, ""},
		{"Strings of floats", r(f.Strings("f32s")), []string(nil), "key f32s is array of float32, want an array of string"},
		{"Float32s", r(f.Float32s("f32s")), []float32{1, 2}, ""},
		{"Float32s of float64", r(f.Float32s("f64s")), []float32{0.25}, ""},
		{"Float32s of int32", r(f.Float32s("i32s")), []float32(nil), "want an array of float32"},
		{"Int32s", r(f.Int32s("i32s")), []int32{-1, 2}, ""},
		{"Int32s of uint32", r(f.Int32s("u32s")), []int32{3, 4}, ""},
		{"Int32s of uint8", r(f.Int32s("u8s")), []int32{9}, ""},
		{"Int32s of int64", r(f.Int32s("i64s")), []int32{-5, math.MinInt32}, ""},
		{"Int32s overflow", r(f.Int32s("u32s.big")), []int32(nil), "element 0 is 2147483648, outside int32"},
		{"Int32s underflow", r(f.Int32s("i64s.small")), []int32(nil), "element 0 is -2147483649, outside int32"},
		{"Int32s of strings", r(f.Int32s("strs")), []int32(nil), "want an array of int32"},
	}
	for _, c := range cases {
		if c.bad != "" {
			if c.got.err == nil || !badinput.Is(c.got.err) || !strings.Contains(c.got.err.Error(), c.bad) || !strings.Contains(c.got.err.Error(), path) || !c.got.ok {
				t.Errorf("%s: %v (ok %v), want bad input naming %s and %q", c.name, c.got.err, c.got.ok, path, c.bad)
			}
			continue
		}
		if c.got.err != nil || fmt.Sprintf("%T %[1]v", c.got.v) != fmt.Sprintf("%T %[1]v", c.want) {
			t.Errorf("%s = %#v, %v; want %#v", c.name, c.got.v, c.got.err, c.want)
		}
	}
	if _, ok := f.KV("nope"); ok {
		t.Error("KV(nope) found")
	}
	if kv, ok := f.KV("u8"); !ok || kv.Type != Uint8 || kv.Value != uint8(7) {
		t.Errorf("KV(u8) = %+v, %v", kv, ok)
	}
}
