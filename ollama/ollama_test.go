package ollama

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Name
		err  string
	}{
		{in: "smollm2", want: Name{DefaultHost, DefaultNamespace, "smollm2", DefaultTag}},
		{in: "smollm2:135m", want: Name{DefaultHost, DefaultNamespace, "smollm2", "135m"}},
		{in: "me/tuned:v1.2", want: Name{DefaultHost, "me", "tuned", "v1.2"}},
		{in: "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", want: Name{"hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"}},
		{in: "localhost:5000/ns/m", want: Name{"localhost:5000", "ns", "m", DefaultTag}},
		{in: "", err: "model"},
		{in: "a/b/c/d", err: "[HOST/]"},
		{in: "../etc:passwd", err: "model"},
		{in: "m:../x", err: "not a valid name part"},
		{in: "m:", err: "tag"},
	} {
		got, err := ParseName(c.in)
		if c.err != "" {
			if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseName(%q) = %v, %v; want a bad-input error mentioning %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if back, err := ParseName(got.String()); err != nil || back != got {
			t.Errorf("ParseName(%q.String() = %q) = %+v, %v", c.in, got.String(), back, err)
		}
	}
}

// fakeStore writes an ollama models folder holding one manifest with the
// given layers, and a blob for each layer whose content is given.
func fakeStore(t *testing.T, name Name, layers []layer, blobs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "layers": layers})
	if err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(dir, "manifests", name.Host, name.Namespace, name.Model)
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mdir, name.Tag), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for digest, content := range blobs {
		if err := os.WriteFile(filepath.Join(dir, "blobs", strings.Replace(digest, ":", "-", 1)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResolve(t *testing.T) {
	const (
		dModel = "sha256:" + "ab12000000000000000000000000000000000000000000000000000000000001"
		dTmpl  = "sha256:" + "ab12000000000000000000000000000000000000000000000000000000000002"
		dAdapt = "sha256:" + "ab12000000000000000000000000000000000000000000000000000000000003"
	)
	name := Name{DefaultHost, DefaultNamespace, "smollm2", "135m"}
	ok := []layer{{mediaModel, dModel, 4}, {"application/vnd.ollama.image.template", dTmpl, 2}}
	for _, c := range []struct {
		name   string
		layers []layer
		blobs  map[string]string
		ref    string
		err    string
	}{
		{name: "model found", layers: ok, blobs: map[string]string{dModel: "GGUF", dTmpl: "{}"}, ref: "smollm2:135m"},
		{name: "unknown tag", layers: ok, blobs: map[string]string{dModel: "GGUF"}, ref: "smollm2", err: "ollama pull smollm2:latest"},
		{name: "blob missing", layers: ok, blobs: nil, ref: "smollm2:135m", err: "is missing"},
		{name: "blob truncated", layers: ok, blobs: map[string]string{dModel: "GG"}, ref: "smollm2:135m", err: "has 2 bytes, the manifest says 4"},
		{name: "adapter layer", layers: append(ok, layer{mediaAdapter, dAdapt, 1}), blobs: map[string]string{dModel: "GGUF"}, ref: "smollm2:135m", err: "layers[2] is " + mediaAdapter},
		{name: "no model layer", layers: ok[1:], blobs: nil, ref: "smollm2:135m", err: "no layer of media type"},
		{name: "bad digest", layers: []layer{{mediaModel, "sha256:../../x", 4}}, ref: "smollm2:135m", err: "digest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := fakeStore(t, name, c.layers, c.blobs)
			m, err := Resolve(c.ref, dir)
			if c.err != "" {
				if err == nil || !badinput.Is(err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Resolve = %v, %v; want a bad-input error mentioning %q", m, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, "blobs", "sha256-"+dModel[7:]); m.GGUF != want || m.Size != 4 {
				t.Fatalf("Resolve = %+v; want blob %s of 4 bytes", m, want)
			}
		})
	}
}

func TestModelsDir(t *testing.T) {
	t.Setenv("OLLAMA_MODELS", "/srv/ollama")
	if d, err := ModelsDir(); err != nil || d != "/srv/ollama" {
		t.Fatalf("ModelsDir with OLLAMA_MODELS = %q, %v", d, err)
	}
	t.Setenv("OLLAMA_MODELS", "")
	t.Setenv("HOME", "/home/u")
	if d, err := ModelsDir(); err != nil || d != "/home/u/.ollama/models" {
		t.Fatalf("ModelsDir = %q, %v", d, err)
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"smollm2", "a/b:c", "h.co/n/m:t", "x:y/z", ":", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			return
		}
		for _, p := range []string{n.Namespace, n.Model, n.Tag} {
			if strings.ContainsAny(p, "/:") || p == "." || p == ".." || strings.HasPrefix(p, ".") {
				t.Fatalf("ParseName(%q) gave part %q that could escape the manifests folder", s, p)
			}
		}
		if back, err := ParseName(n.String()); err != nil || back != n {
			t.Fatalf("ParseName(%q) = %+v, but its String %q parses as %+v, %v", s, n, n.String(), back, err)
		}
	})
}
