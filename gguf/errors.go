package gguf

import (
	"errors"
	"fmt"

	"github.com/migu-ml/migu/internal/badinput"
)

// ErrFormat is matched (errors.Is) by every error about the content of a
// GGUF file: it is corrupt, truncated, not GGUF, or uses what migu cannot
// read.
var ErrFormat = errors.New("malformed GGUF")

// ErrNotFound is matched by the error for a tensor name a file does not
// hold.
var ErrNotFound = errors.New("tensor not found")

// FormatError describes what is wrong with a file, and where.
type FormatError struct {
	Path  string // the file as the caller named it
	Field string // "header", "key general.alignment", "tensor blk.0.attn_q.weight", …
	Msg   string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("gguf: %s: %s: %s", e.Path, e.Field, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true for every FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// formatErr builds a FormatError, marked as bad input for the CLI.
func formatErr(path, field, format string, args ...any) error {
	return badinput.Wrap(&FormatError{Path: path, Field: field, Msg: fmt.Sprintf(format, args...)})
}
