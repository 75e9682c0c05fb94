package kernels

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/onnxpb"
	"google.golang.org/protobuf/proto"
)

// bfloat16 matrix products: ai.migu.bf16.MatMulBF16 (csrc/migu_bf16.c) rounds
// its float32 operands to bfloat16 and multiplies them in oneDNN with
// float32 accumulation and a float32 result. It lives in a library of its
// own, bin/libmigu_bf16.so, built by scripts/bf16.sh only where oneDNN's
// headers are installed (Debian's libdnnl-dev): oneDNN is an optional
// accelerator, and migu builds and trains in float32 without it.
//
// One precision design serves frozen half-precision weights and bf16
// products: master weights and optimizer state are float32 always; a
// model folder may store frozen weight matrices in bfloat16 (migu export
// --dtype bf16), which the forward graph widens with a Cast; under bf16
// products the rewrite feeds those bf16 weights to MatMulBF16 as they are,
// so the Cast and its float32 copy disappear.

// BF16LibName is the bf16 library's file name; `make build` puts it in
// bin/ beside the migu binary when oneDNN is installed.
const BF16LibName = "libmigu_bf16.so"

// BF16LibVersion is the op set this Go code expects of the bf16 library:
// MiguBF16Version in csrc/migu_bf16.c returns the same string, and both
// change together with its ops' domain, inputs, outputs or attributes.
// FindBF16 refuses a library reporting another version. Version 1 put
// MatMulBF16 in the domain ai.migu; 2 in ai.migu.bf16; 3 added MatMulF32
// (f32.go); 4 BatchMatMul (batch.go); 5 ToBF16 (bf16_share.go); 6 the
// optional Bias of MatMulBF16 and MatMulF32 (bias.go); 7 BatchMatMul's
// alpha.
const BF16LibVersion = "7"

// BF16EnvVar names the bf16 library explicitly; unset, FindBF16 looks for
// the built one as Find does.
const BF16EnvVar = "MIGU_BF16"

// FindBF16 returns the bf16 library to load: $MIGU_BF16 (which must
// exist), else BF16LibName beside the executable or in bin/ of the working
// directory or a directory above it; "" when there is none. A library
// that reports another op-set version than BF16LibVersion is refused.
func FindBF16() (string, error) {
	if p := os.Getenv(BF16EnvVar); p != "" {
		if !isFile(p) {
			return "", badinput.Errorf("bf16 library %s (from $%s) does not exist; build it with `make build` (scripts/bf16.sh, needs libdnnl-dev)", p, BF16EnvVar)
		}
		return checked(abs(p), bf16Lib)
	}
	if lib := search(BF16LibName); lib != "" {
		return checked(lib, bf16Lib)
	}
	return "", nil
}

// BF16Hardware is what decides the path of the bf16 products on this CPU,
// read from /proc/cpuinfo: its bf16 matrix units and its vendor.
type BF16Hardware struct {
	// Units is "amx_bf16" (Intel Sapphire Rapids and later), "avx512_bf16"
	// (Intel Cooper Lake, AMD Zen 4 and later, or an AMX CPU whose
	// hypervisor hides AMX) or "" where there are none or the flags
	// cannot be read.
	Units string
	// Vendor is the vendor_id: "GenuineIntel", "AuthenticAMD", or "".
	Vendor string
}

// ReadBF16Hardware reads this machine's BF16Hardware.
func ReadBF16Hardware() BF16Hardware {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return BF16Hardware{}
	}
	return bf16Hardware(data)
}

// bf16Hardware reads the bf16 units and the vendor from a /proc/cpuinfo.
func bf16Hardware(cpuinfo []byte) BF16Hardware {
	flags := cpuFlags(cpuinfo)
	h := BF16Hardware{Vendor: cpuField(cpuinfo, "vendor_id")}
	switch {
	case flags["amx_bf16"]:
		h.Units = "amx_bf16"
	case flags["avx512_bf16"]:
		h.Units = "avx512_bf16"
	}
	return h
}

// Native tells whether MatMulBF16 and bf16 BatchMatMul multiply in bf16 on
// this CPU (oneDNN's bf16 product) rather than as float32 products of the
// bf16-rounded operands; both give the same numbers up to the order of
// the float32 sums. Native pays on AMX-BF16, and on AVX512-BF16 on AMD
// (Zen 4: a step 0.6–0.76× fp32's). On Intel without AMX two float32 FMA
// ports match the one bf16 dot-product port, and oneDNN's bf16 product
// measured half its float32 speed (80 against 155 GFLOP/s a thread,
// Emerald Rapids with AMX hidden); without units oneDNN emulates bf16,
// slower still. native_bf16 in csrc/migu_bf16.c decides alike.
func (h BF16Hardware) Native() bool {
	return h.Units == "amx_bf16" || h.Units == "avx512_bf16" && h.Vendor == "AuthenticAMD"
}

// BF16PathEnvVar forces MatMulBF16's path: "native" (oneDNN's bf16
// product) or "f32" (float32 products of the bf16-rounded operands); unset,
// the library picks native where Native holds.
const BF16PathEnvVar = "MIGU_BF16_PATH"

// NativeNow is Native as a process started now sees it: $MIGU_BF16_PATH,
// when it is native or f32, decides instead of the hardware.
func (h BF16Hardware) NativeNow() bool {
	switch os.Getenv(BF16PathEnvVar) {
	case "native":
		return true
	case "f32":
		return false
	}
	return h.Native()
}

// Path says which path MatMulBF16 takes in a process started now
// (NativeNow), with the reason. It is the description that benchmark
// results print.
func (h BF16Hardware) Path() string {
	forced := " (forced by $" + BF16PathEnvVar + ")"
	switch os.Getenv(BF16PathEnvVar) {
	case "native":
		return "native: oneDNN bf16 products" + forced
	case "f32":
		return "f32: float32 products of the bf16-rounded operands" + forced
	}
	if h.Native() {
		return "native: oneDNN bf16 products on " + h.Units
	}
	return "f32: float32 products of the bf16-rounded operands (" + h.slowReason() + ")"
}

// slowReason says why bf16 products do not pay on a CPU where Native is
// false.
func (h BF16Hardware) slowReason() string {
	if h.Units == "" {
		return "no AMX-BF16 or AVX512-BF16 units"
	}
	if h.Vendor == "GenuineIntel" {
		return "Intel AVX512-BF16 without AMX: oneDNN's bf16 product runs at about half its float32 speed"
	}
	return "AVX512-BF16 without AMX on a CPU not measured to profit from it (vendor " + strconv.Quote(h.Vendor) + ")"
}

// SlowWarning is the one line migu prints before bf16 products run on a
// CPU where Native is false, "" where it holds.
func (h BF16Hardware) SlowWarning() string {
	if h.Native() {
		return ""
	}
	return "warning: precision bf16: " + h.slowReason() + ", so the bf16 products run as float32 products of bf16-rounded operands: the same numbers, but slower than fp32 by the rounding (fp32 is the faster choice on this machine)"
}

// cpuField returns the value of the first line of a /proc/cpuinfo whose
// key is key; "" where there is none.
func cpuField(cpuinfo []byte, key string) string {
	for line := range bytes.Lines(cpuinfo) {
		k, val, ok := bytes.Cut(line, []byte(":"))
		if ok && string(bytes.TrimSpace(k)) == key {
			return string(bytes.TrimSpace(val))
		}
	}
	return ""
}

// cpuFlags reads the first "flags" line of a /proc/cpuinfo (x86); nil
// where there is none.
func cpuFlags(cpuinfo []byte) map[string]bool {
	val := cpuField(cpuinfo, "flags")
	if val == "" {
		return nil
	}
	flags := map[string]bool{}
	for _, f := range strings.Fields(val) {
		flags[f] = true
	}
	return flags
}

// RewriteBF16 replaces the MatMul nodes named in nodes (the weight
// products: migu.json's linears) by ai.migu.bf16.MatMulBF16 nodes with the same
// name and output, where the left operand is float32 of rank 2 or more and
// the right one a 2-D float32 or bfloat16 matrix. On the way it folds the
// right operand's producers that only reshape its precision or layout: a
// Cast to float32 of a bfloat16 weight (the frozen half-precision weights
// of a model folder) is skipped, so MatMulBF16 reads the stored bf16
// values, and a 2-D Transpose (a tied output head) becomes transB. The
// Casts and Transposes left unused are removed. It returns the number of
// products rewritten. Rewrite before differentiation: the gradient rule
// of MatMulBF16 makes the backward products bf16 too.
func RewriteBF16(m *onnx.Model, types Types, nodes map[string]bool) (int, error) {
	g := m.Graph()
	producers := g.Producers()
	// matrix tells whether v is 2-D and of one of the types.
	matrix := func(v string, float, bf16 bool) bool {
		dt, s, ok := types.Type(v)
		return ok && len(s) == 2 && (float && dt == onnx.Float || bf16 && dt == onnx.BFloat16)
	}
	bypassed := map[*onnxpb.NodeProto]bool{}
	count := 0
	for _, n := range g.P.Node {
		if n.GetOpType() != "MatMul" || n.GetDomain() != "" || !nodes[n.GetName()] || len(n.Input) != 2 {
			continue
		}
		a, b := n.Input[0], n.Input[1]
		if dt, s, ok := types.Type(a); !ok || dt != onnx.Float || len(s) < 2 || !matrix(b, true, false) {
			continue
		}
		var transB int64
		for steps := 0; steps < 2; steps++ {
			p := producers[b]
			if p == nil || p.GetDomain() != "" || len(p.Input) != 1 {
				break
			}
			if p.GetOpType() == "Transpose" && transposes2D(p) && matrix(p.Input[0], true, true) {
				transB = 1 - transB
			} else if p.GetOpType() != "Cast" || onnx.AttrIntOr(p, "to", 0) != int64(onnx.Float) || !matrix(p.Input[0], false, true) {
				break
			}
			bypassed[p] = true
			b = p.Input[0]
		}
		n.OpType = proto.String("MatMulBF16")
		n.Domain = proto.String(onnx.DomainMiguBF16)
		n.Input = []string{a, b}
		n.Attribute = []*onnxpb.AttributeProto{onnx.AttrInt("transA", 0), onnx.AttrInt("transB", transB)}
		count++
	}
	if count == 0 {
		return 0, nil
	}
	removeUnread(g, func(n *onnxpb.NodeProto) bool { return bypassed[n] })
	m.SetOpset(onnx.DomainMiguBF16, Opset)
	return count, nil
}

// removeUnread removes the nodes that candidate picks while their output
// is read by nothing and is no graph output, until none is left: a
// rewrite's bypassed nodes, and those that only fed them.
func removeUnread(g *onnx.Graph, candidate func(*onnxpb.NodeProto) bool) {
	outputs := map[string]bool{}
	for _, o := range g.P.Output {
		outputs[o.GetName()] = true
	}
	for removed := true; removed; {
		consumers := g.Consumers()
		removed = g.RemoveNodes(func(n *onnxpb.NodeProto) bool {
			return candidate(n) && len(consumers[n.Output[0]]) == 0 && !outputs[n.Output[0]]
		}) > 0
	}
}

// transposes2D tells whether a Transpose swaps the two axes of a matrix.
func transposes2D(n *onnxpb.NodeProto) bool {
	p := onnx.GetAttr(n, "perm")
	return p == nil || len(p.Ints) == 2 && p.Ints[0] == 1 && p.Ints[1] == 0
}
