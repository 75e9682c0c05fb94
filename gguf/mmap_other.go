//go:build !unix

package gguf

import (
	"errors"
	"os"
)

// mmap is unavailable here; Open falls back to reading the file.
func mmap(*os.File, int) ([]byte, error) { return nil, errors.ErrUnsupported }

func munmap([]byte) error { return nil }
