package safetensors

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

// shardDir writes shards (file → tensor names, one F32 value each, equal to
// the name's length) and an index into a fresh directory.
func shardDir(t *testing.T, shards map[string][]string, index string) string {
	t.Helper()
	dir := t.TempDir()
	for file, names := range shards {
		var ts []Tensor
		for _, n := range names {
			ts = append(ts, Tensor{Name: n, DType: F32, Shape: []int64{1}, Values: []float32{float32(len(n))}})
		}
		p := filepath.Join(dir, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Write(p, ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	if index != "" {
		if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(index), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOpenDirSharded(t *testing.T) {
	dir := shardDir(t, map[string][]string{
		"model-00001-of-00002.safetensors":     {"embed", "layer.0"},
		"sub/model-00002-of-00002.safetensors": {"head"},
	}, `{"metadata":{"total_size":12,"format":"pt"},"weight_map":{
		"embed":"model-00001-of-00002.safetensors",
		"layer.0":"./model-00001-of-00002.safetensors",
		"head":"sub/model-00002-of-00002.safetensors"}}`)
	c, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Names(); !slices.Equal(got, []string{"embed", "head", "layer.0"}) {
		t.Errorf("Names = %q", got)
	}
	if m := c.Metadata(); m["total_size"] != "12" || m["format"] != "pt" {
		t.Errorf("Metadata = %q", m)
	}
	if len(c.Files()) != 2 {
		t.Errorf("%d files open, want 2", len(c.Files()))
	}
	for _, name := range c.Names() {
		v, err := c.Float32(name)
		if err != nil || len(v) != 1 || v[0] != float32(len(name)) {
			t.Errorf("Float32(%q) = %v, %v", name, v, err)
		}
		dst := make([]float32, 1)
		if err := c.ReadInto(name, dst); err != nil || dst[0] != float32(len(name)) {
			t.Errorf("ReadInto(%q) = %v, %v", name, dst, err)
		}
		if info, err := c.Info(name); err != nil || info.Name != name {
			t.Errorf("Info(%q) = %+v, %v", name, info, err)
		}
		if b, err := c.Bytes(name); err != nil || len(b) != 4 {
			t.Errorf("Bytes(%q) = %v, %v", name, b, err)
		}
	}
	if f, _ := c.File("head"); f == nil || !strings.HasSuffix(f.Path(), filepath.Join("sub", "model-00002-of-00002.safetensors")) {
		t.Errorf("File(head) = %v", f)
	}
	if _, err := c.Float32("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Float32(missing): %v", err)
	}
}

func TestOpenDirSingle(t *testing.T) {
	dir := shardDir(t, map[string][]string{SingleFile: {"a", "bb"}}, "")
	c, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Names(); !slices.Equal(got, []string{"a", "bb"}) {
		t.Errorf("Names = %q", got)
	}
	if c.Metadata()["format"] != "pt" {
		t.Errorf("Metadata = %q", c.Metadata())
	}
	if v, err := c.Float32("bb"); err != nil || v[0] != 2 {
		t.Errorf("Float32(bb) = %v, %v", v, err)
	}
}

func TestOpenDirErrors(t *testing.T) {
	one := map[string][]string{"s1.safetensors": {"a", "b"}}
	two := map[string][]string{"s1.safetensors": {"a", "b"}, "s2.safetensors": {"c"}}
	cases := []struct {
		name   string
		shards map[string][]string
		index  string
		tensor string
		want   string
	}{
		{"no checkpoint", nil, "", "", "holds neither model.safetensors.index.json nor model.safetensors"},
		{"invalid json", one, `{"weight_map":`, "", "index is not valid JSON"},
		{"not an object", one, `[]`, "", "index is not valid JSON: want an object"},
		{"no weight_map", one, `{"metadata":{}}`, "", "no weight_map entries"},
		{"weight_map not object", one, `{"weight_map":["a"]}`, "", "weight_map is an array"},
		{"shard not string", one, `{"weight_map":{"a":1}}`, "a", "weight_map value is 1"},
		{"duplicate tensor key", one, `{"weight_map":{"a":"s1.safetensors","a":"s1.safetensors","b":"s1.safetensors"}}`, "", `key "a" appears twice`},
		{"dotdot escape", one, `{"weight_map":{"a":"../s1.safetensors","b":"s1.safetensors"}}`, "a", `shard "../s1.safetensors" is not a relative path inside`},
		{"absolute path", one, `{"weight_map":{"a":"/etc/passwd","b":"s1.safetensors"}}`, "a", "not a relative path"},
		{"empty shard name", one, `{"weight_map":{"a":"","b":"s1.safetensors"}}`, "a", "not a relative path"},
		{"missing shard", one, `{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s9.safetensors"}}`, "", `shard "s9.safetensors", which does not exist`},
		{"tensor absent from shard", one, `{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","z":"s1.safetensors"}}`, "z", "puts it in s1.safetensors, which has no such tensor"},
		{"tensor not in weight_map", one, `{"weight_map":{"a":"s1.safetensors"}}`, "b", "shard s1.safetensors holds it, but weight_map does not list it"},
		{"tensor in two shards", map[string][]string{"s1.safetensors": {"a", "b"}, "s2.safetensors": {"b", "c"}},
			`{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}}`, "b", "in two shards: s1.safetensors (per weight_map) and s2.safetensors"},
		{"tensor in two shards, mapped to the second", map[string][]string{"s1.safetensors": {"a", "b"}, "s2.safetensors": {"b", "c"}},
			`{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}}`, "b", "in two shards"},
		{"corrupt shard", two, `{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors","d":"bad.safetensors"}}`, "", "too short for the 8-byte header length"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := shardDir(t, c.shards, c.index)
			if err := os.WriteFile(filepath.Join(dir, "bad.safetensors"), []byte{1}, 0o644); err != nil {
				t.Fatal(err)
			}
			ck, err := OpenDir(dir)
			if err == nil {
				ck.Close()
				t.Fatalf("OpenDir succeeded, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
			if !badinput.Is(err) {
				t.Errorf("error %q is not marked as bad input", err)
			}
			var fe *FormatError
			if errors.As(err, &fe) && fe.Tensor != c.tensor {
				t.Errorf("FormatError names tensor %q, want %q", fe.Tensor, c.tensor)
			}
		})
	}
}

// A shard that is a symbolic link out of the checkpoint directory must be
// refused even though its name looks local.
func TestOpenIndexSymlinkEscape(t *testing.T) {
	outside := shardDir(t, map[string][]string{"s.safetensors": {"a"}}, "")
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(outside, "s.safetensors"), filepath.Join(dir, "s.safetensors")); err != nil {
		t.Skip("no symlinks:", err)
	}
	index := filepath.Join(dir, IndexFile)
	if err := os.WriteFile(index, []byte(`{"weight_map":{"a":"s.safetensors"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := OpenIndex(index); err == nil {
		c.Close()
		t.Fatal("OpenIndex followed a symlink out of its directory")
	}
}
