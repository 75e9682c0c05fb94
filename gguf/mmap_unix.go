//go:build unix

package gguf

import (
	"os"
	"syscall"
)

// mmap maps size bytes of f read-only; the mapping outlives f's descriptor.
func mmap(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func munmap(b []byte) error { return syscall.Munmap(b) }
