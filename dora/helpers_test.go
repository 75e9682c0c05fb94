package dora

import "github.com/migu-ml/migu/internal/testfix"

// Model loading and adapter injection as the other adapter tests do them.
var (
	loadModel = testfix.LoadModel
	injected  = testfix.Injected
)

// transpose turns [rows, cols] into [cols, rows].
func transpose(v []float32, rows, cols int64) []float32 {
	out := make([]float32, len(v))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = v[i*cols+j]
		}
	}
	return out
}

func anyStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
