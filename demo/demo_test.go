package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/onnx/ort"
)

func TestDemoRunsEndToEnd(t *testing.T) {
	if err := ort.Init(ort.InitOptions{LibraryPath: testenv.ORTLib(t)}); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"llama", "t5", "roberta"} {
		t.Run(arch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "demo")
			var buf bytes.Buffer
			if err := Run(&buf, Options{Out: out, Arch: arch, Threads: 1, Texts: 4, TaskSize: 32}); err != nil {
				t.Fatal(err)
			}
			report := buf.String()
			for _, want := range []string{"1. init", "2. export", "3. prepare", "4. one forward+backward Run", "5. MIGU", "6. migu train", "standard ONNX domain only: true", "q ", "ffn_out"} {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
			for _, f := range []string{"hf/config.json", "hf/model.safetensors", "model/model.onnx", "model/migu.json", "model/tokenizer.json"} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Error(err)
				}
			}
			// A rerun replaces the demo's own folder.
			if err := Run(&bytes.Buffer{}, Options{Out: out, Arch: arch, Threads: 1, Texts: 2, TaskSize: 16}); err != nil {
				t.Fatalf("rerun: %v", err)
			}
		})
	}
}

func TestDemoRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("keep me"), 0o644)
	if err := Run(&bytes.Buffer{}, Options{Out: dir}); err == nil || !strings.Contains(err.Error(), "not made by migu demo") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "precious.txt")); err != nil {
		t.Fatal("demo deleted a file it did not make")
	}
}
