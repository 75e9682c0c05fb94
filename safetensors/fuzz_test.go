package safetensors

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Open through a real file: it must return
// a FormatError or a File whose every tensor can be read within bounds.
func FuzzOpen(f *testing.F) {
	valid := filepath.Join(f.TempDir(), "seed.safetensors")
	err := Write(valid, []Tensor{
		{Name: "w", DType: F32, Shape: []int64{2, 2}, Values: []float32{1, 2, 3, 4}},
		{Name: "h", DType: F16, Shape: []int64{3}, Values: []float32{1, -2, 0.5}},
		{Name: "b", DType: BF16, Shape: []int64{1}, Values: []float32{7}},
		{Name: "d", DType: F64, Shape: []int64{}, Values: []float32{9}},
		{Name: "i", DType: I64, Shape: []int64{1}, Data: make([]byte, 8)},
		{Name: "e", DType: F32, Shape: []int64{0, 4}, Values: []float32{}},
	}, map[string]string{"format": "pt"})
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(valid)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add(seed[:20])
	f.Add(rawFile(`{}`, nil))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}}`, make([]byte, 4)))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"__metadata__":{"k":"v"},"a":{"dtype":"BF16","shape":[2],"data_offsets":[2,6]}}`, make([]byte, 6)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'})

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "fuzz-*.safetensors")
		if err != nil {
			t.Fatal(err)
		}
		path := tmp.Name()
		defer os.Remove(path)
		_, err = tmp.Write(data)
		tmp.Close()
		if err != nil {
			t.Fatal(err)
		}
		file, err := Open(path)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error is not ErrFormat: %v", err)
			}
			return
		}
		defer file.Close()
		covered := int64(0)
		for _, name := range file.Names() {
			info, err := file.Info(name)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := file.Bytes(name)
			if err != nil || int64(len(raw)) != info.End-info.Begin || int64(len(raw)) != info.NumElements()*int64(info.DType.Size()) {
				t.Fatalf("%s: %d raw bytes for %+v (%v)", name, len(raw), info, err)
			}
			covered += int64(len(raw))
			if info.DType.converts() {
				v, err := file.Float32(name)
				if err != nil || int64(len(v)) != info.NumElements() {
					t.Fatalf("%s: Float32 gave %d values, %v", name, len(v), err)
				}
			}
		}
		if covered != int64(len(data))-file.h.dataStart {
			t.Fatalf("tensors cover %d of %d data bytes", covered, int64(len(data))-file.h.dataStart)
		}
	})
}
