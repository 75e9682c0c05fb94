// Package pages gives memory-mapped file pages back to the kernel. Pages of
// a read-only file mapping that a process has touched count in its resident
// memory until it unmaps them; a reader that streams a checkpoint far larger
// than memory through one mapping releases each tensor's pages after use,
// so its footprint stays that of one tensor (the page cache keeps the data
// for whoever reads it next).
package pages

import (
	"os"
	"syscall"
	"unsafe"
)

var pageSize = uintptr(os.Getpagesize())

// Release drops the whole pages inside b, a slice of a read-only shared
// file mapping, from the process's resident set. It is a hint: pages at
// the edges that b shares with its neighbours stay, and errors are
// ignored, since the data is read back from the file if touched again.
func Release(b []byte) {
	if len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := start + uintptr(len(b))
	first := (start + pageSize - 1) &^ (pageSize - 1)
	last := end &^ (pageSize - 1)
	if last <= first {
		return
	}
	_ = syscall.Madvise(b[first-start:last-start], syscall.MADV_DONTNEED)
}
