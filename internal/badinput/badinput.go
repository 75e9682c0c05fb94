// Package badinput marks errors caused by what the user gave us — a file, a
// setting, a field — as opposed to failures of the machine or of migu itself.
// The CLI exits with status 2 for the first kind and 1 for the second.
//
// A library error names a setting by its Setting name (the name a job's
// configuration records, e.g. "epochs", "migu_t"), never by how a front end
// spells it; a front end that offers the setting under another name (the
// CLI's --migu) puts its own spelling back with Rename.
package badinput

import (
	"errors"
	"fmt"
	"strings"
)

// Setting is the name of a setting in an error message. Given to Errorf or
// Range as an argument, it prints as its name, and Rename can respell it.
type Setting string

type inputError struct {
	err    error
	format string // Errorf's format and arguments, so Rename can format again
	args   []any
}

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// Errorf formats an error like fmt.Errorf and marks it as bad input.
// Settings among args are named with Setting.
func Errorf(format string, args ...any) error {
	return &inputError{err: fmt.Errorf(format, args...), format: format, args: args}
}

// Wrap marks err as bad input; nil stays nil.
func Wrap(err error) error {
	if err == nil || Is(err) {
		return err
	}
	return &inputError{err: err}
}

// Is reports whether err, or any error it wraps, is bad input.
func Is(err error) bool {
	var ie *inputError
	return errors.As(err, &ie)
}

// Range is the error of a setting whose value lies outside what it
// accepts: one line naming the setting, the value and the allowed range, so
// every range check reads the same ("epochs -1 is outside its range: ≥ 1").
func Range(s Setting, value any, allowed string) error {
	return Errorf("%v %v is outside its range: %s", s, value, allowed)
}

// Settings lists the settings that the bad-input errors in err name, in
// the order they are met: in err's chain and in errors given to Errorf as
// arguments.
func Settings(err error) []Setting {
	var out []Setting
	if e, ok := err.(*inputError); ok && e.format != "" {
		for _, a := range e.args {
			switch a := a.(type) {
			case Setting:
				out = append(out, a)
			case error:
				out = append(out, Settings(a)...)
			}
		}
		return out
	}
	for _, inner := range unwrap(err) {
		out = append(out, Settings(inner)...)
	}
	return out
}

// Rename returns err's message with every setting that its bad-input
// errors name spelled as spell says (the CLI: the flag that sets it). The
// rest of the message is unchanged.
func Rename(err error, spell func(Setting) string) string {
	if e, ok := err.(*inputError); ok && e.format != "" {
		args := make([]any, len(e.args))
		for i, a := range e.args {
			switch a := a.(type) {
			case Setting:
				args[i] = spell(a)
			case error:
				args[i] = renamed{Rename(a, spell), a}
			default:
				args[i] = a
			}
		}
		return fmt.Errorf(e.format, args...).Error()
	}
	// A wrapper that kept no format (fmt.Errorf's, Wrap's) holds its inner
	// errors' messages as they are: each is replaced by its renamed text.
	msg := err.Error()
	for _, inner := range unwrap(err) {
		msg = strings.Replace(msg, inner.Error(), Rename(inner, spell), 1)
	}
	return msg
}

// renamed stands in for an error argument when Rename formats again: it
// prints the renamed message and, for %w, wraps the original.
type renamed struct {
	msg string
	err error
}

func (r renamed) Error() string { return r.msg }
func (r renamed) Unwrap() error { return r.err }

// unwrap lists the errors err wraps directly.
func unwrap(err error) []error {
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		return u.Unwrap()
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			return []error{inner}
		}
	}
	return nil
}
