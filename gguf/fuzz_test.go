package gguf

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// FuzzOpen feeds arbitrary bytes to the parser behind Open: it must return
// a bad-input FormatError, or a File whose every key and tensor can be
// read within bounds.
func FuzzOpen(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.gguf")
	w := NewWriter()
	w.Add("general.architecture", "llama")
	w.Add("tokenizer.ggml.tokens", []string{"a", "bc"})
	w.Add("tokenizer.ggml.scores", []float32{0.5, -1})
	w.Add("nested", []any{[]uint16{1}, []any{[]bool{true}}})
	w.Add("n", uint32(3))
	rng := rand.New(rand.NewPCG(1, 1))
	for _, typ := range []Type{F32, BF16, Q4_1, Q6_K} {
		elems, _, _ := typ.BlockSize()
		data := randomBlocks(rng, typ, 2)
		w.AddTensor("t."+typ.String(), typ, []int64{2, int64(elems)}, func() ([]byte, error) { return data, nil })
	}
	if err := w.Write(path); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add(seed[:100])
	f.Add(header(0, 0).b)
	f.Add(kvFile(func(b *builder) {
		b.str("a").u32(uint32(Array)).u32(uint32(Array)).u64(2).u32(uint32(String)).u64(1).str("x").u32(uint32(Int8)).u64(1).u8(1)
	}))
	f.Add(oneTensor("w", Q8_0, 0, 34, 32))
	f.Add(append(header(2, 0).tensorInfo("a", F16, 0, 16).tensorInfo("b", F16, 32, 16).padTo(32).b, make([]byte, 64)...))

	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.gguf", data)
		if err != nil {
			if !errors.Is(err, ErrFormat) || !badinput.Is(err) {
				t.Fatalf("error is not a bad-input FormatError: %v", err)
			}
			return
		}
		defer file.Close()
		for _, kv := range file.KVs {
			file.String(kv.Key)
			file.Uint(kv.Key)
			file.Int(kv.Key)
			file.Float(kv.Key)
			file.Bool(kv.Key)
			file.Strings(kv.Key)
			file.Float32s(kv.Key)
			file.Int32s(kv.Key)
		}
		for _, ti := range file.Tensors {
			raw, err := file.Bytes(ti.Name)
			if err != nil || int64(len(raw)) != ti.Size() {
				t.Fatalf("%s: %d raw bytes for %+v (%v)", ti.Name, len(raw), ti, err)
			}
			v, err := file.Float32(ti.Name)
			if err != nil || int64(len(v)) != ti.NumElements() {
				t.Fatalf("%s: Float32 gave %d values, %v", ti.Name, len(v), err)
			}
		}
	})
}
