package safetensors

import (
	"errors"
	"fmt"

	"github.com/migu-ml/migu/internal/badinput"
)

// ErrFormat is matched (errors.Is) by every error about the content of a
// safetensors file or index: the file is corrupt, truncated or not
// safetensors at all.
var ErrFormat = errors.New("malformed safetensors")

// ErrNotFound is matched by the error for a tensor name a file does not
// hold.
var ErrNotFound = errors.New("tensor not found")

// FormatError describes what is wrong with a file, and where.
type FormatError struct {
	Path   string // the file as the caller named it
	Tensor string // the offending tensor, "" when the problem is file-wide
	Msg    string // what is wrong, naming the header field
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("safetensors: %s: tensor %q: %s", e.Path, e.Tensor, e.Msg)
	}
	return fmt.Sprintf("safetensors: %s: %s", e.Path, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true for every FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// formatErr builds a FormatError, marked as bad input for the CLI.
func formatErr(path, tensor, format string, args ...any) error {
	return badinput.Wrap(&FormatError{Path: path, Tensor: tensor, Msg: fmt.Sprintf(format, args...)})
}

// notFound is the error for a missing tensor; asking for a name a checkpoint
// lacks is the caller's input, so it is bad input too.
func notFound(path, name string) error {
	return badinput.Wrap(fmt.Errorf("safetensors: %s: no tensor %q: %w", path, name, ErrNotFound))
}
