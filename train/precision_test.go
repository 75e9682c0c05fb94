package train

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
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

// --products settings resolve to the products moved to oneDNN: auto takes
// kernels.AutoOneDNN where the bf16 library is found, for fp32 on the CPU
// provider, and attention's products for bf16 on the CPU provider; mlas
// none; onednn OneDNNProducts (AutoOneDNN's, or kernels.OneDNNRoles where
// it has none) anywhere on the CPU provider. Each refusal is one
// bad-input error naming the setting (or $MIGU_BF16).
func TestProductsSettings(t *testing.T) {
	lib := testenv.BF16(t)
	missing := filepath.Join(t.TempDir(), kernels.BF16LibName)
	auto, onednn := kernels.AutoOneDNN(), OneDNNProducts()
	if (auto != kernels.F32Roles{} && onednn != auto) || !onednn.Forward || !onednn.WeightGrads || !onednn.Attention {
		t.Fatalf("onednn moves %+v where auto moves %+v", onednn, auto)
	}
	cuda := ort.SessionOptions{Provider: ort.ProviderCUDA}
	cases := []struct {
		name, products string
		cfg            Config
		env            string // $MIGU_BF16
		want           kernels.F32Roles
		err            string // "": accepted
	}{
		{"default", "", Config{}, lib, auto, ""},
		{"auto", "auto", Config{}, lib, auto, ""},
		{"auto on cuda", "auto", Config{Session: cuda}, lib, kernels.F32Roles{}, ""},
		{"auto under bf16", "auto", Config{Precision: PrecisionBF16}, lib, kernels.F32Roles{Attention: true}, ""},
		{"auto under bf16 on cuda", "auto", Config{Precision: PrecisionBF16, Session: cuda}, lib, kernels.F32Roles{}, ""},
		{"mlas", "mlas", Config{}, lib, kernels.F32Roles{}, ""},
		{"mlas without the library", "mlas", Config{}, missing, kernels.F32Roles{}, ""},
		{"onednn", "onednn", Config{}, lib, onednn, ""},
		{"onednn without the library", "onednn", Config{}, missing, onednn, "(from $MIGU_BF16) does not exist"},
		{"onednn on cuda", "onednn", Config{Session: cuda}, lib, onednn, "products onednn runs on the CPU provider only"},
		{"unknown", "fast", Config{}, lib, kernels.F32Roles{}, `products "fast" is not one of auto, mlas, onednn`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(kernels.BF16EnvVar, c.env)
			var got kernels.F32Roles
			roles, err := ParseProducts(c.products)
			if err == nil {
				c.cfg.OneDNN = roles
				var lib string
				got, lib, err = OneDNNRoles(c.cfg, "")
				if err == nil && (lib != "") != (got != kernels.F32Roles{}) {
					t.Fatalf("roles %+v with library %q", got, lib)
				}
			}
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !badinput.Is(err)):
				t.Fatalf("error %v, want bad input with %q", err, c.err)
			case c.err == "" && got != c.want:
				t.Fatalf("roles %+v, want %+v", got, c.want)
			}
		})
	}
}
