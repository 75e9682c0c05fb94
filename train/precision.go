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

// Whether the bf16 products' operands are rounded once for all products
// that read them (GraphOptions.ShareBF16) or in each product
// (Config.BF16Sharing); the numbers are the same bits either way.
const (
	// BF16ShareAuto rounds once where the products run natively
	// (kernels.BF16Hardware.NativeNow): there they read bf16 as it is. On
	// the float32 path they would widen the bf16 copy back to float32, no
	// cheaper than rounding, so each product rounds its own.
	BF16ShareAuto = ""
	// BF16ShareNever lets every product round its operands.
	BF16ShareNever = "never"
	// BF16ShareAlways rounds once on either path.
	BF16ShareAlways = "always"
)

// shareBF16 tells whether a bf16 run rounds shared operands once.
func shareBF16(cfg Config) bool {
	switch cfg.BF16Sharing {
	case BF16ShareNever:
		return false
	case BF16ShareAlways:
		return true
	}
	return kernels.ReadBF16Hardware().NativeNow()
}

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
	if cfg.Precision != PrecisionBF16 {
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
// whose bf16 units do not pay (kernels.BF16Hardware.Native), where the
// products run as float32 products of rounded operands, slower than fp32;
// "" otherwise. The run goes on either way.
func (t *Trainer) PrecisionWarning() string {
	if t.cfg.Precision != PrecisionBF16 {
		return ""
	}
	return kernels.ReadBF16Hardware().SlowWarning()
}

// Where the float32 products run (--products; Config.OneDNN).
const (
	// ProductsAuto runs the products measured faster in oneDNN on CPUs of
	// this one's kind (kernels.AutoOneDNN) there when the bf16 library is
	// found, in MLAS otherwise.
	ProductsAuto = "auto"
	// ProductsMLAS runs every float32 product in ORT's MLAS.
	ProductsMLAS = "mlas"
	// ProductsOneDNN runs OneDNNProducts in oneDNN
	// (ai.migu.bf16.MatMulF32) on any CPU; it needs the bf16 library.
	ProductsOneDNN = "onednn"
)

// OneDNNProducts are the products --products onednn moves to oneDNN:
// those auto moves on this CPU (kernels.AutoOneDNN), or
// kernels.OneDNNRoles where auto moves none.
func OneDNNProducts() kernels.F32Roles {
	if roles := kernels.AutoOneDNN(); roles != (kernels.F32Roles{}) {
		return roles
	}
	return kernels.OneDNNRoles
}

// ParseProducts reads a --products setting ("" is auto) into
// Config.OneDNN.
func ParseProducts(s string) (*kernels.F32Roles, error) {
	switch s {
	case "", ProductsAuto:
		return nil, nil
	case ProductsMLAS:
		return &kernels.F32Roles{}, nil
	case ProductsOneDNN:
		roles := OneDNNProducts()
		return &roles, nil
	}
	return nil, badinput.Errorf("%v %q is not one of auto, mlas, onednn", badinput.Setting("products"), s)
}

// OneDNNRoles resolves Config.OneDNN for a run whose bf16 library (for
// bf16 precision) is bf16Lib: the products to move to oneDNN, and the
// library the session then loads (bf16Lib, or the one found). Automatic
// (nil), fp32 runs on the CPU provider take kernels.AutoOneDNN where the
// bf16 library is found, and none elsewhere;
// bf16 runs their attention products (in bf16, as autocast does; their
// weight products are MatMulBF16 already). Asked for
// explicitly, the products need the CPU provider and the library, or it
// is an error naming the setting.
func OneDNNRoles(cfg Config, bf16Lib string) (kernels.F32Roles, string, error) {
	none := kernels.F32Roles{}
	cpu := cfg.Session.Provider == "" || cfg.Session.Provider == ort.ProviderCPU
	if cfg.OneDNN == nil {
		auto := none
		switch {
		case !cpu:
		case cfg.Precision == PrecisionBF16:
			auto = kernels.F32Roles{Attention: true}
		default:
			auto = kernels.AutoOneDNN()
		}
		if auto == none || bf16Lib != "" {
			return auto, bf16Lib, nil
		}
		lib, err := kernels.FindBF16()
		if err != nil || lib == "" {
			return none, bf16Lib, err
		}
		return auto, lib, nil
	}
	roles := *cfg.OneDNN
	if roles == none || bf16Lib != "" {
		return roles, bf16Lib, nil
	}
	if !cpu {
		return none, "", badinput.Errorf("%v onednn runs on the CPU provider only; use mlas (or auto) with %s", badinput.Setting("products"), cfg.Session.Provider)
	}
	lib, err := kernels.FindBF16()
	if err != nil {
		return none, "", err
	}
	if lib == "" {
		return none, "", badinput.Errorf("%v onednn needs %s, which `make build` builds where oneDNN is installed (apt-get install libdnnl-dev), or $%s naming it; none was found", badinput.Setting("products"), kernels.BF16LibName, kernels.BF16EnvVar)
	}
	return roles, lib, nil
}
