package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/half"
)

// specials are float32 values whose bits must survive every F32 path.
var specials = []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, 3.4028235e38, 1e-45, 1.17549435e-38, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0.1, -65504}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	i64 := make([]byte, 3*8)
	for i, v := range []int64{-1, 0, math.MaxInt64} {
		binary.LittleEndian.PutUint64(i64[8*i:], uint64(v))
	}
	vals := make([]float32, 24)
	for i := range vals {
		vals[i] = float32(i)*0.37 - 4
	}
	// want is what reading gives back: values rounded through the dtype.
	through := func(vs []float32, f func(float32) float32) []float32 {
		out := make([]float32, len(vs))
		for i, v := range vs {
			out[i] = f(v)
		}
		return out
	}
	cases := []struct {
		t    Tensor
		want []float32 // nil for dtypes Float32 refuses
	}{
		{Tensor{Name: "w.f32", DType: F32, Shape: []int64{2, 3, 4}, Values: vals}, vals},
		{Tensor{Name: "specials", DType: F32, Shape: []int64{int64(len(specials))}, Values: specials}, specials},
		{Tensor{Name: "w.f16", DType: F16, Shape: []int64{4, 6}, Values: vals}, through(vals, func(v float32) float32 { return half.F16ToF32(half.F32ToF16(v)) })},
		{Tensor{Name: "w.bf16", DType: BF16, Shape: []int64{24}, Values: vals}, through(vals, func(v float32) float32 { return half.BF16ToF32(half.F32ToBF16(v)) })},
		{Tensor{Name: "w.f64", DType: F64, Shape: []int64{24, 1}, Values: vals}, vals},
		{Tensor{Name: "scalar", DType: F32, Shape: []int64{}, Values: []float32{42}}, []float32{42}},
		{Tensor{Name: "empty", DType: F32, Shape: []int64{0, 5}, Values: []float32{}}, []float32{}},
		{Tensor{Name: "ids", DType: I64, Shape: []int64{3}, Data: i64}, nil},
		{Tensor{Name: "mask", DType: BOOL, Shape: []int64{2}, Data: []byte{1, 0}}, nil},
	}
	meta := map[string]string{"format": "pt", "note": "é\n\"quoted\"\x01"}
	tensors := make([]Tensor, len(cases))
	for i, c := range cases {
		tensors[i] = c.t
	}

	for _, mapped := range []bool{true, false} {
		tryMmap = mapped
		dir := t.TempDir()
		path := filepath.Join(dir, "rt.safetensors")
		if err := Write(path, tensors, meta); err != nil {
			t.Fatal(err)
		}
		if got := dirEntries(t, dir); !slices.Equal(got, []string{"rt.safetensors"}) {
			t.Errorf("directory holds %q after Write", got)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.mapped != mapped {
			t.Errorf("mapped = %v, want %v", f.mapped, mapped)
		}
		want := []string{"empty", "ids", "mask", "scalar", "specials", "w.bf16", "w.f16", "w.f32", "w.f64"}
		if got := f.Names(); !slices.Equal(got, want) {
			t.Errorf("Names = %q, want %q", got, want)
		}
		if got := f.Metadata(); len(got) != 2 || got["format"] != "pt" || got["note"] != meta["note"] {
			t.Errorf("Metadata = %q", got)
		}
		for _, c := range cases {
			info, err := f.Info(c.t.Name)
			if err != nil {
				t.Fatal(err)
			}
			if info.DType != c.t.DType || !slices.Equal(info.Shape, c.t.Shape) || info.End-info.Begin != int64(len(c.t.Data)+len(c.t.Values)*c.t.DType.Size()) {
				t.Errorf("%s: Info = %+v", c.t.Name, info)
			}
			got, err := f.Float32(c.t.Name)
			if c.want == nil {
				if !errors.Is(err, ErrDType) {
					t.Errorf("%s: Float32 error %v, want ErrDType", c.t.Name, err)
				}
				raw, err := f.Bytes(c.t.Name)
				if err != nil || string(raw) != string(c.t.Data) {
					t.Errorf("%s: Bytes = %v, %v; want %v", c.t.Name, raw, err, c.t.Data)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameBits(got, c.want) {
				t.Errorf("%s: Float32 = %v, want %v", c.t.Name, got, c.want)
			}
			dst := make([]float32, len(c.want))
			if err := f.ReadInto(c.t.Name, dst); err != nil || !sameBits(dst, c.want) {
				t.Errorf("%s: ReadInto = %v, %v", c.t.Name, dst, err)
			}
			if err := f.ReadInto(c.t.Name, make([]float32, len(c.want)+1)); err == nil {
				t.Errorf("%s: ReadInto accepted a destination of the wrong length", c.t.Name)
			}
		}
		if _, err := f.Float32("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), path) {
			t.Errorf("Float32 of a missing tensor: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Bytes("ids"); err == nil {
			t.Error("Bytes after Close succeeded")
		}
	}
	tryMmap = true
}

// The header must be laid out as the reference writer lays it out: metadata
// first, tensors by descending dtype alignment then name, compact JSON,
// spaces to a multiple of 8.
func TestHeaderLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.safetensors")
	err := Write(path, []Tensor{
		{Name: "b", DType: U8, Shape: []int64{3}, Data: []byte{1, 2, 3}},
		{Name: "a", DType: F16, Shape: []int64{1}, Values: []float32{1}},
		{Name: "c", DType: F32, Shape: []int64{1}, Values: []float32{1}},
		{Name: "d", DType: I64, Shape: []int64{}, Data: make([]byte, 8)},
		{Name: "e", DType: F32, Shape: []int64{0}, Values: []float32{}},
	}, map[string]string{"z": "1", "a": "<>&\u2028"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"__metadata__":{"a":"<>&` + "\u2028" + `","z":"1"},` +
		`"d":{"dtype":"I64","shape":[],"data_offsets":[0,8]},` +
		`"c":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},` +
		`"e":{"dtype":"F32","shape":[0],"data_offsets":[12,12]},` +
		`"a":{"dtype":"F16","shape":[1],"data_offsets":[12,14]},` +
		`"b":{"dtype":"U8","shape":[3],"data_offsets":[14,17]}}`
	for len(want)%8 != 0 {
		want += " "
	}
	n := binary.LittleEndian.Uint64(b)
	if int(n) != len(want) || string(b[8:8+n]) != want {
		t.Errorf("header %d bytes\n%q\nwant %d bytes\n%q", n, b[8:min(len(b), 8+int(n))], len(want), want)
	}
	if len(b) != 8+len(want)+17 {
		t.Errorf("file is %d bytes, want %d", len(b), 8+len(want)+17)
	}
}

func TestWriterStreaming(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.safetensors")
	specs := []Spec{{"x", F32, []int64{3}}, {"y", BF16, []int64{2}}, {"z", I32, []int64{1}}}
	w, err := Create(path, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	// Out of declaration and layout order.
	if err := w.WriteBytes("z", []byte{1, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFloat32("y", []float32{1.5, -2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil || !strings.Contains(err.Error(), `tensors never written: "x"`) {
		t.Fatalf("Commit with a tensor missing: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("file appeared before a successful Commit")
	}
	if err := w.WriteFloat32("x", []float32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFloat32("x", []float32{1, 2, 3}); err == nil {
		t.Error("write after Commit succeeded")
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if y, _ := f.Float32("y"); !slices.Equal(y, []float32{1.5, -2}) {
		t.Errorf("y = %v", y)
	}
	if f.Metadata() != nil {
		t.Errorf("Metadata = %v, want nil", f.Metadata())
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"s.safetensors"}) {
		t.Errorf("directory holds %q", got)
	}
}

func TestWriteErrors(t *testing.T) {
	cases := []struct {
		name    string
		tensors []Tensor
		want    string
	}{
		{"duplicate", []Tensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}, {Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, `tensor "a" given twice`},
		{"reserved name", []Tensor{{Name: "__metadata__", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, "reserved"},
		{"bad utf8", []Tensor{{Name: "\xff", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, "not valid UTF-8"},
		{"unknown dtype", []Tensor{{Name: "a", DType: "F128", Shape: []int64{1}, Data: make([]byte, 16)}}, `unknown dtype "F128"`},
		{"negative dim", []Tensor{{Name: "a", DType: U8, Shape: []int64{-1}}}, "negative dim"},
		{"overflow", []Tensor{{Name: "a", DType: F64, Shape: []int64{1 << 40, 1 << 40}}}, "overflows"},
		{"short data", []Tensor{{Name: "a", DType: F32, Shape: []int64{2}, Data: make([]byte, 7)}}, "takes 8 bytes, got 7"},
		{"short values", []Tensor{{Name: "a", DType: BF16, Shape: []int64{2}, Values: []float32{1}}}, "takes 2 values, got 1"},
		{"values for ints", []Tensor{{Name: "a", DType: I32, Shape: []int64{1}, Values: []float32{1}}}, "not a float dtype"},
		{"both data and values", []Tensor{{Name: "a", DType: F32, Shape: []int64{1}, Data: make([]byte, 4), Values: []float32{1}}}, "both Data and Values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Write(filepath.Join(dir, "x.safetensors"), c.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Write error %v, want one containing %q", err, c.want)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("failed Write left %q behind", got)
			}
		})
	}
	if err := Write(filepath.Join(t.TempDir(), "missing", "x.safetensors"), nil, nil); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}

// A failed Write must leave an existing file at the path untouched.
func TestWriteKeepsOldFileOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.safetensors")
	if err := Write(path, []Tensor{{Name: "a", DType: F32, Shape: []int64{1}, Values: []float32{1}}}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Write(path, []Tensor{{Name: "a", DType: F32, Shape: []int64{2}, Values: []float32{1}}}, nil); err == nil {
		t.Fatal("Write with short values succeeded")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("failed Write changed the existing file")
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"c.safetensors"}) {
		t.Errorf("directory holds %q", got)
	}
}

// AppendFloat32 writes a tensor in pieces, converting each, and the file
// equals one written whole; too many values, a mix with WriteFloat32 and an
// unfinished tensor are refused.
func TestAppendFloat32(t *testing.T) {
	values := []float32{1, -2.5, 3.0000002, 1e-8, 65519, -0.1, 7}
	cases := []struct {
		name   string
		dtype  DType
		pieces []int // sizes of the appended pieces
		want   string
	}{
		{"f32 in three", F32, []int{2, 0, 5}, ""},
		{"bf16 one by one", BF16, []int{1, 1, 1, 1, 1, 1, 1}, ""},
		{"f16 in two", F16, []int{6, 1}, ""},
		{"f64 whole", F64, []int{7}, ""},
		{"too many", BF16, []int{5, 3}, "takes 7 values, got 8"},
		{"unfinished", F16, []int{3}, `"w" (3 of 7 values)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			whole, pieces := filepath.Join(dir, "whole.safetensors"), filepath.Join(dir, "pieces.safetensors")
			specs := []Spec{{"w", c.dtype, []int64{7}}}
			if err := Write(whole, []Tensor{{Name: "w", DType: c.dtype, Shape: []int64{7}, Values: values}}, nil); err != nil {
				t.Fatal(err)
			}
			w, err := Create(pieces, specs, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			src := append(slices.Clone(values), make([]float32, 8)...) // room for too many
			at := 0
			for _, n := range c.pieces {
				if err = w.AppendFloat32("w", src[at:at+n]); err != nil {
					break
				}
				at += n
			}
			if err == nil {
				err = w.Commit()
			}
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %v, want one containing %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(whole)
			b, _ := os.ReadFile(pieces)
			if !bytes.Equal(a, b) {
				t.Error("the file written in pieces differs from the one written whole")
			}
		})
	}
	w, err := Create(filepath.Join(t.TempDir(), "mix.safetensors"), []Spec{{"w", F32, []int64{2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AppendFloat32("w", []float32{1}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFloat32("w", []float32{1, 2}); err == nil || !strings.Contains(err.Error(), "written twice") {
		t.Errorf("WriteFloat32 after AppendFloat32: %v", err)
	}
}
