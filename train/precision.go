package train

import (
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
)

// Precisions of the weight products (Config.Precision, GraphOptions.Precision).
// Master weights, gradients and optimizer state are float32 under both.
const (
	// PrecisionFP32 multiplies in float32 (ORT's MatMul and Gemm).
	PrecisionFP32 = "fp32"
	// PrecisionBF16 rounds the operands of every weight product — the
	// linears of migu.json, forward and backward — to bfloat16 and
	// multiplies them with float32 accumulation (ai.migu.bf16.MatMulBF16,
	// oneDNN), as PyTorch's CPU autocast does. Frozen weights a model
	// folder stores in bfloat16 feed the products as they are.
	PrecisionBF16 = "bf16"
)

// CheckPrecision checks a precision setting ("" is fp32).
func CheckPrecision(p string) error {
	switch p {
	case "", PrecisionFP32, PrecisionBF16:
		return nil
	}
	return badinput.Errorf("%v %q is not one of fp32, bf16", badinput.Setting("precision"), p)
}

// BF16Library resolves the library of MatMulBF16 for a bf16 run: "" for
// fp32, an error naming the setting where bf16 cannot run.
func BF16Library(cfg Config) (string, error) {
	if cfg.Precision != PrecisionBF16 && cfg.OneDNN == (kernels.F32Roles{}) {
		return "", nil
	}
	if cfg.Session.Provider != "" && cfg.Session.Provider != ort.ProviderCPU {
		return "", badinput.Errorf("%v bf16 runs on the CPU provider only (its products are oneDNN CPU kernels); use fp32 with %s", badinput.Setting("precision"), cfg.Session.Provider)
	}
	lib, err := kernels.FindBF16()
	if err != nil {
		return "", err
	}
	if lib == "" {
		return "", badinput.Errorf("%v bf16 needs %s, which `make build` builds where oneDNN is installed (apt-get install libdnnl-dev), or $%s naming it; none was found", badinput.Setting("precision"), kernels.BF16LibName, kernels.BF16EnvVar)
	}
	return lib, nil
}

// PrecisionWarning is the one line to show before a bf16 run on a CPU
// without bf16 units (AMX-BF16, AVX512-BF16), where the products run as
// float32 products of rounded operands, slower than fp32; "" otherwise. The run goes on either way.
func (t *Trainer) PrecisionWarning() string {
	if t.bf16 == "" {
		return ""
	}
	return kernels.BF16SlowWarning(kernels.BF16Units())
}
