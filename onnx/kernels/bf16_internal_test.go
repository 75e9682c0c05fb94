package kernels

import "testing"

func TestBF16Units(t *testing.T) {
	for _, c := range []struct {
		name, cpuinfo, want string
	}{
		{"ice lake (this machine)", "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bitalg\nbugs\t\t: spectre\n", ""},
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
