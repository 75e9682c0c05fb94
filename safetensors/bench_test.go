package safetensors

import (
	"fmt"
	"path/filepath"
	"testing"
)

// benchFile writes a checkpoint of about 64 MB: 256 F32 tensors of 256 KB,
// named like a decoder's layers, so Open's header parse has real work.
func benchFile(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.safetensors")
	specs := make([]Spec, 256)
	for i := range specs {
		specs[i] = Spec{fmt.Sprintf("model.layers.%d.mlp.proj_%d.weight", i/8, i%8), F32, []int64{256, 256}}
	}
	w, err := Create(path, specs, map[string]string{"format": "pt"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Abort()
	vals := make([]float32, 256*256)
	for _, s := range specs {
		if err := w.WriteFloat32(s.Name, vals); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	return path
}

func BenchmarkOpen64MB(b *testing.B) {
	path := benchFile(b)
	b.ResetTimer()
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkFloat32 converts a 4M-element tensor (a 2048×2048 projection)
// from each float dtype; bytes/s counts the float32 output.
func BenchmarkFloat32(b *testing.B) {
	const n = 2048 * 2048
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%1000) * 0.001
	}
	for _, d := range []DType{BF16, F16, F32} {
		b.Run(string(d), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "t.safetensors")
			if err := Write(path, []Tensor{{Name: "w", DType: d, Shape: []int64{2048, 2048}, Values: vals}}, nil); err != nil {
				b.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			dst := make([]float32, n)
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := f.ReadInto("w", dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWriteBF16(b *testing.B) {
	const n = 2048 * 2048
	vals := make([]float32, n)
	path := filepath.Join(b.TempDir(), "w.safetensors")
	b.SetBytes(4 * n)
	for b.Loop() {
		if err := Write(path, []Tensor{{Name: "w", DType: BF16, Shape: []int64{2048, 2048}, Values: vals}}, nil); err != nil {
			b.Fatal(err)
		}
	}
}
