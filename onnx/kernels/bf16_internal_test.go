package kernels

import "testing"

// bf16Hardware reads the units and the vendor; Native holds on AMX and on
// AMD's AVX512-BF16 only, and the warning comes exactly where it does not.
func TestBF16Hardware(t *testing.T) {
	const intel, amd = "vendor_id\t: GenuineIntel\n", "vendor_id\t: AuthenticAMD\n"
	for _, c := range []struct {
		name, cpuinfo string
		want          BF16Hardware
		native        bool
	}{
		{"ice lake", "processor\t: 0\n" + intel + "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bitalg\nbugs\t\t: spectre\n", BF16Hardware{"", "GenuineIntel"}, false},
		{"zen 4", amd + "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", BF16Hardware{"avx512_bf16", "AuthenticAMD"}, true},
		{"sapphire rapids", intel + "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n", BF16Hardware{"amx_bf16", "GenuineIntel"}, true},
		{"emerald rapids, amx hidden", intel + "flags\t\t: avx512f avx512_bf16 avx512_fp16\n", BF16Hardware{"avx512_bf16", "GenuineIntel"}, false},
		{"no vendor line", "flags\t\t: avx512f avx512_bf16\n", BF16Hardware{"avx512_bf16", ""}, false},
		{"first cpu's lines only", amd + "flags\t\t: avx2\n" + intel + "flags\t\t: amx_bf16\n", BF16Hardware{"", "AuthenticAMD"}, false},
		{"flag as a prefix of another", "flags\t\t: avx512_bf16x amx_bf16_not\n", BF16Hardware{}, false},
		{"no flags line (other architectures)", "Features\t: fp asimd bf16\n", BF16Hardware{}, false},
		{"empty", "", BF16Hardware{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := bf16Hardware([]byte(c.cpuinfo))
			if got != c.want {
				t.Fatalf("bf16Hardware = %+v, want %+v", got, c.want)
			}
			if got.Native() != c.native {
				t.Fatalf("%+v: Native = %v, want %v", got, got.Native(), c.native)
			}
			if w := got.SlowWarning(); (w == "") != c.native {
				t.Fatalf("%+v: SlowWarning = %q", got, w)
			}
		})
	}
}

// Path names the path the library takes: the forced one, else native
// exactly where Native holds, with the reason.
func TestBF16Path(t *testing.T) {
	amd, intel := BF16Hardware{"avx512_bf16", "AuthenticAMD"}, BF16Hardware{"avx512_bf16", "GenuineIntel"}
	for _, c := range []struct {
		env  string
		hw   BF16Hardware
		want string
	}{
		{"", BF16Hardware{}, "f32: float32 products of the bf16-rounded operands (no AMX-BF16 or AVX512-BF16 units)"},
		{"", amd, "native: oneDNN bf16 products on avx512_bf16"},
		{"", intel, "f32: float32 products of the bf16-rounded operands (Intel AVX512-BF16 without AMX: oneDNN's bf16 product runs at about half its float32 speed)"},
		{"", BF16Hardware{"avx512_bf16", ""}, `f32: float32 products of the bf16-rounded operands (AVX512-BF16 without AMX on a CPU not measured to profit from it (vendor ""))`},
		{"", BF16Hardware{"amx_bf16", "GenuineIntel"}, "native: oneDNN bf16 products on amx_bf16"},
		{"native", BF16Hardware{}, "native: oneDNN bf16 products (forced by $MIGU_BF16_PATH)"},
		{"f32", amd, "f32: float32 products of the bf16-rounded operands (forced by $MIGU_BF16_PATH)"},
		{"other", amd, "native: oneDNN bf16 products on avx512_bf16"},
	} {
		t.Setenv(BF16PathEnvVar, c.env)
		if got := c.hw.Path(); got != c.want {
			t.Errorf("MIGU_BF16_PATH=%q %+v: %q, want %q", c.env, c.hw, got, c.want)
		}
	}
}

// AutoOneDNN moves OneDNNRoles on Ice Lake, Zen 4 and AMX Xeons
// (avx512_vbmi2), where oneDNN's float32 products were measured faster
// than MLAS's, and nothing elsewhere.
func TestAutoOneDNN(t *testing.T) {
	for _, c := range []struct {
		name, cpuinfo string
		want          F32Roles
	}{
		{"ice lake", "flags\t\t: fpu avx2 avx512f avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg\n", OneDNNRoles},
		{"cascade lake", "flags\t\t: fpu avx2 avx512f avx512_vnni\n", F32Roles{}},
		{"zen 4", "flags\t\t: fpu avx512f avx512_vbmi2 avx512_bf16 avx512_vnni\n", OneDNNRoles},
		{"sapphire rapids", "flags\t\t: avx512f avx512_vbmi2 avx512_bf16 amx_bf16 amx_tile\n", OneDNNRoles},
		{"avx2 only", "flags\t\t: fpu avx2 fma\n", F32Roles{}},
		{"no flags line (other architectures)", "Features\t: fp asimd bf16\n", F32Roles{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := autoOneDNN(cpuFlags([]byte(c.cpuinfo))); got != c.want {
				t.Fatalf("autoOneDNN = %+v, want %+v", got, c.want)
			}
		})
	}
}
