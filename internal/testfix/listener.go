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
	return ln.Addr().(*net.TCPAddr).Port, n.Load
}
