package train

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// Precision settings: the accepted values, and each refusal one bad-input
// error naming the precision setting (or $MIGU_BF16) and what to do.
func TestPrecisionSettings(t *testing.T) {
	missing := filepath.Join(t.TempDir(), kernels.BF16LibName)
	cases := []struct {
		name string
		cfg  Config
		env  string // $MIGU_BF16
		want string // "" accepted
	}{
		{"default", Config{}, "", ""},
		{"fp32", Config{Precision: PrecisionFP32}, "", ""},
		{"fp32 on cuda", Config{Precision: PrecisionFP32, Session: ort.SessionOptions{Provider: ort.ProviderCUDA}}, "", ""},
		{"unknown", Config{Precision: "fp16"}, "", `precision "fp16" is not one of fp32, bf16`},
		{"bf16 on cuda", Config{Precision: PrecisionBF16, Session: ort.SessionOptions{Provider: ort.ProviderCUDA}}, "", "bf16 runs on the CPU provider only"},
		{"bf16 library missing", Config{Precision: PrecisionBF16}, missing, "(from $MIGU_BF16) does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(kernels.BF16EnvVar, c.env)
			err := CheckPrecision(c.cfg.Precision)
			if err == nil {
				_, err = BF16Library(c.cfg)
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !badinput.Is(err)):
				t.Fatalf("error %v, want bad input with %q", err, c.want)
			}
		})
	}
}
