package sandbox

import (
	"encoding/binary"
	"testing"
)

// runBPF interprets the filter's few opcodes on one seccomp_data record
// and returns the action.
func runBPF(t *testing.T, prog []byte, nr, arch, arg0 uint32) uint32 {
	t.Helper()
	data := map[uint32]uint32{offNr: nr, offArch: arch, offArg0: arg0}
	var acc uint32
	for pc := 0; pc < len(prog)/8; {
		in := prog[8*pc : 8*pc+8]
		code, jt, jf, k := binary.LittleEndian.Uint16(in), int(in[2]), int(in[3]), binary.LittleEndian.Uint32(in[4:])
		pc++
		switch code {
		case bpfLdWAbs:
			v, ok := data[k]
			if !ok {
				t.Fatalf("load of offset %d", k)
			}
			acc = v
		case bpfJeqK, bpfJgeK:
			hit := acc == k
			if code == bpfJgeK {
				hit = acc >= k
			}
			if hit {
				pc += jt
			} else {
				pc += jf
			}
		case bpfRetK:
			return k
		default:
			t.Fatalf("opcode %#x", code)
		}
	}
	t.Fatal("the filter ran off its end")
	return 0
}

// TestSeccompFilter runs each architecture's filter on the calls it must
// deny, the socket families it must tell apart, calls it must allow and
// calls of a foreign ABI.
func TestSeccompFilter(t *testing.T) {
	eperm := uint32(retErrno | errnoEPERM)
	for name, a := range seccompArches {
		prog := a.program()
		if len(prog)%8 != 0 || len(prog)/8 > 255 {
			t.Fatalf("%s: %d bytes", name, len(prog))
		}
		type call struct {
			what     string
			nr, arch uint32
			arg0     uint32
			want     uint32
			x32Only  bool
		}
		cases := []call{
			{what: "AF_UNIX socket", nr: a.socket, arch: a.audit, arg0: 1, want: eperm},
			{what: "AF_NETLINK socket", nr: a.socket, arch: a.audit, arg0: 16, want: eperm},
			{what: "AF_INET socket", nr: a.socket, arch: a.audit, arg0: afInet, want: retAllow},
			{what: "AF_INET6 socket", nr: a.socket, arch: a.audit, arg0: afInet6, want: retAllow},
			{what: "an ordinary call", nr: 3, arch: a.audit, want: retAllow},
			{what: "foreign ABI", nr: 0, arch: 0x40000003, want: retKill},
			{what: "x32 call", nr: x32Bit | 41, arch: a.audit, want: eperm, x32Only: true},
		}
		for _, nr := range a.denied {
			cases = append(cases, call{what: "denied call", nr: nr, arch: a.audit, want: eperm})
		}
		for _, c := range cases {
			if c.x32Only && !a.x32 {
				continue
			}
			if got := runBPF(t, prog, c.nr, c.arch, c.arg0); got != c.want {
				t.Errorf("%s: %s (nr %d, arg0 %d): action %#x, want %#x", name, c.what, c.nr, c.arg0, got, c.want)
			}
		}
	}
}
