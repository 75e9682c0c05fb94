package sandbox

import (
	"encoding/binary"
	"runtime"
)

// The seccomp filter the harness installs on itself before the program
// runs. It is the same at every isolation level and holds against native
// code too: no signal handlers or mask changes (the harness has blocked
// every signal), no new processes or threads (clone, fork, vfork, clone3), no
// exec, no sockets but IPv4 and IPv6 ones (which the network namespace
// leaves nowhere to go; AF_UNIX would reach the host's filesystem sockets
// where the file system is shared), no ptrace or reading other processes'
// memory, no namespaces, mounts, keyrings, BPF, perf, userfaultfd or
// io_uring (whose operations seccomp cannot see), no device nodes or FIFOs.
// A denied call fails with EPERM; a call of another architecture's ABI
// kills the process.

// Classic BPF opcodes and seccomp return values (linux/filter.h,
// linux/seccomp.h).
const (
	bpfLdWAbs  = 0x20 // BPF_LD | BPF_W | BPF_ABS
	bpfJeqK    = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	bpfJgeK    = 0x35 // BPF_JMP | BPF_JGE | BPF_K
	bpfRetK    = 0x06 // BPF_RET | BPF_K
	retAllow   = 0x7fff0000
	retKill    = 0x80000000 // SECCOMP_RET_KILL_PROCESS
	retErrno   = 0x00050000
	errnoEPERM = 1

	// Offsets into struct seccomp_data.
	offNr   = 0
	offArch = 4
	offArg0 = 16 // the low 32 bits of args[0] on little-endian machines

	afInet  = 2
	afInet6 = 10

	x32Bit = 0x40000000 // syscall numbers of amd64's x32 ABI
)

// seccompArch is one architecture's audit id and syscall numbers.
type seccompArch struct {
	audit  uint32
	socket uint32
	denied []uint32
	x32    bool // also deny the x32 ABI's numbers
}

var seccompArches = map[string]seccompArch{
	"amd64": {
		audit:  0xC000003E,
		socket: 41,
		// rt_sigaction rt_sigprocmask clone fork vfork execve ptrace mknod
		// chroot pivot_root mount umount2 add_key request_key keyctl mknodat
		// unshare perf_event_open setns process_vm_readv process_vm_writev
		// bpf execveat userfaultfd io_uring_setup io_uring_enter
		// io_uring_register clone3
		denied: []uint32{13, 14, 56, 57, 58, 59, 101, 133, 161, 155, 165, 166, 248, 249, 250, 259, 272, 298, 308, 310, 311, 321, 322, 323, 425, 426, 427, 435},
		x32:    true,
	},
	"arm64": {
		audit:  0xC00000B7,
		socket: 198,
		// rt_sigaction rt_sigprocmask clone execve ptrace mknodat chroot
		// pivot_root mount umount2 add_key request_key keyctl unshare
		// perf_event_open setns process_vm_readv process_vm_writev bpf
		// execveat userfaultfd io_uring_setup io_uring_enter
		// io_uring_register clone3
		denied: []uint32{134, 135, 220, 221, 117, 33, 51, 41, 40, 39, 217, 218, 219, 97, 241, 268, 270, 271, 280, 281, 282, 425, 426, 427, 435},
	},
}

// bpfInsn is one struct sock_filter; jt and jf name labels until resolved.
type bpfInsn struct {
	code   uint16
	jt, jf string
	k      uint32
	label  string
}

// seccompFilter returns the filter for the running architecture as the
// bytes of a sock_filter array, or nil where no table exists.
func seccompFilter() []byte {
	a, ok := seccompArches[runtime.GOARCH]
	if !ok {
		return nil
	}
	return a.program()
}

func (a seccompArch) program() []byte {
	deny := "deny"
	p := []bpfInsn{
		{code: bpfLdWAbs, k: offArch},
		{code: bpfJeqK, k: a.audit, jt: "nr", jf: ""},
		{code: bpfRetK, k: retKill},
		{code: bpfLdWAbs, k: offNr, label: "nr"},
	}
	if a.x32 {
		p = append(p, bpfInsn{code: bpfJgeK, k: x32Bit, jt: deny})
	}
	for _, nr := range a.denied {
		p = append(p, bpfInsn{code: bpfJeqK, k: nr, jt: deny})
	}
	p = append(p,
		bpfInsn{code: bpfJeqK, k: a.socket, jt: "socket"},
		bpfInsn{code: bpfRetK, k: retAllow},
		bpfInsn{code: bpfLdWAbs, k: offArg0, label: "socket"},
		bpfInsn{code: bpfJeqK, k: afInet, jt: "allow"},
		bpfInsn{code: bpfJeqK, k: afInet6, jt: "allow"},
		bpfInsn{code: bpfRetK, k: retErrno | errnoEPERM, label: deny},
		bpfInsn{code: bpfRetK, k: retAllow, label: "allow"},
	)
	at := map[string]int{}
	for i, in := range p {
		if in.label != "" {
			at[in.label] = i
		}
	}
	jump := func(i int, label string) uint8 {
		if label == "" {
			return 0
		}
		return uint8(at[label] - i - 1)
	}
	out := make([]byte, 0, 8*len(p))
	for i, in := range p {
		out = binary.LittleEndian.AppendUint16(out, in.code)
		out = append(out, jump(i, in.jt), jump(i, in.jf))
		out = binary.LittleEndian.AppendUint32(out, in.k)
	}
	return out
}
