package testfix

import (
	"net"
	"sync/atomic"
	"testing"
)

// Listener accepts TCP connections on 127.0.0.1 and counts them, so that
// sandbox tests can tell whether a program reached the host's network. It
// closes when the test ends.
func Listener(t testing.TB) (port int, connections func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().(*net.TCPAddr).Port, Count(t, ln)
}

// Count accepts and closes ln's connections until the test ends (when it
// closes ln) and returns how many came so far.
func Count(t testing.TB, ln net.Listener) func() int64 {
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return n.Load
}
