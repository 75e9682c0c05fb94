package kernels

import "testing"

func TestBF16Units(t *testing.T) {
	for _, c := range []struct {
		name, cpuinfo, want string
	}{
		{"ice lake", "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bitalg\nbugs\t\t: spectre\n", ""},
		{"zen 4", "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", "avx512_bf16"},
		{"sapphire rapids", "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n", "amx_bf16"},
		{"first cpu's flags only", "flags\t\t: avx2\nflags\t\t: amx_bf16\n", ""},
		{"flag as a prefix of another", "flags\t\t: avx512_bf16x amx_bf16_not\n", ""},
		{"no flags line (other architectures)", "Features\t: fp asimd bf16\n", ""},
		{"empty", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := bf16Units([]byte(c.cpuinfo)); got != c.want {
				t.Fatalf("bf16Units = %q, want %q", got, c.want)
			}
			if w := BF16SlowWarning(c.want); (w == "") != (c.want != "") {
				t.Fatalf("BF16SlowWarning(%q) = %q", c.want, w)
			}
		})
	}
}

// BF16ProductPath names the path the library takes: the forced one, else
// native exactly where the CPU has bf16 units.
func TestBF16ProductPath(t *testing.T) {
	for _, c := range []struct {
		env, units, want string
	}{
		{"", "", "f32: float32 products of the bf16-rounded operands (no AMX-BF16 or AVX512-BF16 units)"},
		{"", "avx512_bf16", "native: oneDNN bf16 products on avx512_bf16"},
		{"", "amx_bf16", "native: oneDNN bf16 products on amx_bf16"},
		{"native", "", "native: oneDNN bf16 products (forced by $MIGU_BF16_PATH)"},
		{"f32", "amx_bf16", "f32: float32 products of the bf16-rounded operands (forced by $MIGU_BF16_PATH)"},
		{"other", "amx_bf16", "native: oneDNN bf16 products on amx_bf16"},
	} {
		t.Setenv(BF16PathEnvVar, c.env)
		if got := BF16ProductPath(c.units); got != c.want {
			t.Errorf("MIGU_BF16_PATH=%q units %q: %q, want %q", c.env, c.units, got, c.want)
		}
	}
}

// OneDNNFaster holds on Ice Lake and Zen 4 (avx512_vbmi2 without AMX),
// where oneDNN's float32 products were measured faster than MLAS's, and
// nowhere else.
func TestOneDNNFaster(t *testing.T) {
	for _, c := range []struct {
		name, cpuinfo string
		want          bool
	}{
		{"ice lake", "flags\t\t: fpu avx2 avx512f avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg\n", true},
		{"cascade lake", "flags\t\t: fpu avx2 avx512f avx512_vnni\n", false},
		{"zen 4", "flags\t\t: fpu avx512f avx512_vbmi2 avx512_bf16 avx512_vnni\n", true},
		{"sapphire rapids", "flags\t\t: avx512f avx512_vbmi2 avx512_bf16 amx_bf16 amx_tile\n", false},
		{"avx2 only", "flags\t\t: fpu avx2 fma\n", false},
		{"no flags line (other architectures)", "Features\t: fp asimd bf16\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := oneDNNFaster(cpuFlags([]byte(c.cpuinfo))); got != c.want {
				t.Fatalf("oneDNNFaster = %v, want %v", got, c.want)
			}
		})
	}
}
