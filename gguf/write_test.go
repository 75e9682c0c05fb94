package gguf

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterRejects(t *testing.T) {
	data := func() ([]byte, error) { return nil, nil }
	cases := []struct {
		name string
		do   func(w *Writer) error
		want string
	}{
		{"int", func(w *Writer) error { return w.Add("n", 3) }, "key n: cannot store a int"},
		{"map", func(w *Writer) error { return w.Add("m", map[string]int{}) }, "cannot store a map[string]int"},
		{"duplicate key", func(w *Writer) error { w.Add("k", "a"); return w.Add("k", "b") }, "key k added twice"},
		{"unknown type", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: 13, Value: "x"}) }, "unknown value type 13"},
		{"string as uint32", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: Uint32, Value: "7"}) }, "type uint32 cannot hold a string"},
		{"out of range", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: Uint8, Value: 300}) }, "300 does not fit uint8"},
		{"negative unsigned", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: Uint64, Value: int64(-1)}) }, "-1 does not fit uint64"},
		{"int as float", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: Float32, Value: 1}) }, "type float32 cannot hold a int"},
		{"elem mismatch", func(w *Writer) error {
			return w.AddKV(KV{Key: "k", Type: Array, ElemType: Int32, Value: []uint32{1}})
		}, "ElemType is int32 but the value is a []uint32"},
		{"array of ints", func(w *Writer) error { return w.AddKV(KV{Key: "k", Type: Array, ElemType: Int64, Value: []int{1}}) }, "array value is a []int"},
		{"nested scalar", func(w *Writer) error { return w.Add("k", []any{[]int8{1}, int8(2)}) }, "element 1 of an array of arrays is a int8"},
		{"alignment type", func(w *Writer) error { return w.Add(AlignmentKey, uint64(64)) }, "must be a uint32 power of two, got uint64 64"},
		{"alignment value", func(w *Writer) error { return w.Add(AlignmentKey, uint32(48)) }, "got uint32 48"},
		{"empty name", func(w *Writer) error { return w.AddTensor("", F32, []int64{1}, data) }, "empty name"},
		{"long name", func(w *Writer) error { return w.AddTensor(strings.Repeat("x", 64), F32, []int64{1}, data) }, "64 bytes is longer than llama.cpp's 63"},
		{"duplicate tensor", func(w *Writer) error {
			w.AddTensor("t", F32, []int64{1}, data)
			return w.AddTensor("t", F32, []int64{1}, data)
		}, "tensor t added twice"},
		{"five dims", func(w *Writer) error { return w.AddTensor("t", F32, []int64{1, 1, 1, 1, 1}, data) }, "more than 4 dims"},
		{"zero dim", func(w *Writer) error { return w.AddTensor("t", F32, []int64{2, 0}, data) }, "not positive"},
		{"huge", func(w *Writer) error { return w.AddTensor("t", F32, []int64{1 << 40, 1 << 40}, data) }, "too large"},
		{"unreadable type", func(w *Writer) error { return w.AddTensor("t", IQ4_NL, []int64{32}, data) }, "cannot write type IQ4_NL"},
		{"partial block", func(w *Writer) error { return w.AddTensor("t", Q4_K, []int64{2, 128}, data) }, "row length 128 is not a multiple of the 256 values of a Q4_K block"},
		{"no data", func(w *Writer) error { return w.AddTensor("t", F32, []int64{1}, nil) }, "no data function"},
	}
	for _, c := range cases {
		err := c.do(NewWriter())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// A failing or wrong-sized tensor leaves nothing behind: not the file, not
// a temporary.
func TestWriteFailureLeavesNothing(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name string
		data func() ([]byte, error)
		want string
	}{
		{"error", func() ([]byte, error) { return nil, boom }, "tensor w: boom"},
		{"short", func() ([]byte, error) { return make([]byte, 7), nil }, "tensor w (F32, shape [2]) takes 8 bytes, its data function gave 7"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		w := NewWriter()
		if err := w.AddTensor("w", F32, []int64{2}, c.data); err != nil {
			t.Fatal(err)
		}
		err := w.Write(filepath.Join(dir, "out.gguf"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if es, _ := os.ReadDir(dir); len(es) != 0 {
			t.Errorf("%s: left %d files behind", c.name, len(es))
		}
	}
}

// Our reader reads back what Writer wrote, with a custom alignment, and
// each tensor's data is asked for once, during Write.
func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.gguf")
	w := ourFile(t, path, 128)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Alignment != 128 || f.DataOffset()%128 != 0 {
		t.Errorf("alignment %d, data at %d", f.Alignment, f.DataOffset())
	}
	want := make([]any, len(w.kvs))
	for i, kv := range w.kvs {
		want[i] = canonKV(kv)
	}
	got := make([]any, len(f.KVs))
	for i, kv := range f.KVs {
		got[i] = canonKV(kv)
	}
	sameJSON(t, "metadata", got, normalize(t, want))
	for i, p := range w.tensors {
		ti := f.Tensors[i]
		if ti.Name != p.info.Name || ti.Type != p.info.Type || ti.Offset%128 != 0 {
			t.Errorf("tensor %d: %+v, wrote %+v", i, ti, p.info)
		}
		data, _ := p.data()
		if raw, err := f.Bytes(ti.Name); err != nil || !bytes.Equal(raw, data) {
			t.Errorf("%s: bytes differ (%v)", ti.Name, err)
		}
	}

	calls := 0
	w2 := NewWriter()
	for _, name := range []string{"a", "b"} {
		w2.AddTensor(name, F32, []int64{1}, func() ([]byte, error) { calls++; return make([]byte, 4), nil })
	}
	if calls != 0 {
		t.Error("data asked for before Write")
	}
	if err := w2.Write(filepath.Join(t.TempDir(), "b.gguf")); err != nil || calls != 2 {
		t.Errorf("Write: %v, %d data calls, want 2", err, calls)
	}
}

// normalize passes a value through JSON, as sameJSON does to the other
// side.
func normalize(t *testing.T, v any) any {
	t.Helper()
	var out any
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
