package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// rawFile assembles a file from a header exactly as given (no padding) and
// a data section.
func rawFile(hdr string, data []byte) []byte {
	b := make([]byte, 8, 8+len(hdr)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	b = append(b, hdr...)
	return append(b, data...)
}

// writeTemp stores content under a fresh temporary directory.
func writeTemp(t testing.TB, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirEntries lists a directory's names, to catch leftover temporary files.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
