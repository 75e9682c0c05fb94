// Package badinput marks errors caused by what the user gave us — a file, a
// flag, a field — as opposed to failures of the machine or of migu itself.
// The CLI exits with status 2 for the first kind and 1 for the second.
package badinput

import (
	"errors"
	"fmt"
)

type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// Errorf formats an error like fmt.Errorf and marks it as bad input.
func Errorf(format string, args ...any) error {
	return &inputError{fmt.Errorf(format, args...)}
}

// Wrap marks err as bad input; nil stays nil.
func Wrap(err error) error {
	if err == nil || Is(err) {
		return err
	}
	return &inputError{err}
}

// Is reports whether err, or any error it wraps, is bad input.
func Is(err error) bool {
	var ie *inputError
	return errors.As(err, &ie)
}

// Range is the error of a flag whose value lies outside what it accepts:
// one line naming the flag, the value and the allowed range, so every
// range check reads the same ("--epochs -1 is outside its range: ≥ 1").
func Range(flag string, value any, allowed string) error {
	return Errorf("%s %v is outside its range: %s", flag, value, allowed)
}
