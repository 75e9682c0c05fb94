package modeldir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

func validManifest() *Manifest {
	return &Manifest{
		Format: FormatVersion, Architecture: "llama", Objective: "clm",
		Inputs: []string{"input_ids", "attention_mask"}, Outputs: []string{"logits"},
		VocabSize: 10, HiddenSize: 4, NumLayers: 1,
		Linears: []Linear{
			{Name: "model.layers.0.self_attn.q_proj", Role: RoleQ, Weight: "w", Node: "n", Output: "y", DIn: 4, DOut: 4},
			{Name: "lm_head", Role: RoleHead, Block: -1, Weight: "h", Node: "m", Output: "logits", DIn: 4, DOut: 10},
		},
		Blocks: []BlockStack{{Residuals: []string{"embed", "model.layers.0.mlp.residual"}}},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := validManifest()
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.LinearsWithRoles(RoleQ)) != 1 || len(got.LinearsWithRoles()) != 2 || got.Linears[1].Block != -1 || len(got.Blocks) != 1 || len(got.Blocks[0].Residuals) != 2 {
		t.Fatalf("read back %+v", got)
	}
}

func TestManifestRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Manifest)
		want string
	}{
		{"future format", func(m *Manifest) { m.Format = 9 }, "format 9"},
		{"objective", func(m *Manifest) { m.Objective = "rl" }, `objective "rl"`},
		{"role", func(m *Manifest) { m.Linears[0].Role = "gate" }, `unknown layer role "gate"`},
		{"dims", func(m *Manifest) { m.Linears[1].DOut = 0 }, "lm_head"},
		{"duplicate", func(m *Manifest) { m.Linears[1].Name = m.Linears[0].Name }, "appears twice"},
		{"no outputs", func(m *Manifest) { m.Outputs = nil }, "inputs and outputs"},
		{"empty residual", func(m *Manifest) { m.Blocks[0].Residuals[1] = "" }, "residuals[1] is empty"},
		{"one residual", func(m *Manifest) { m.Blocks[0].Residuals = m.Blocks[0].Residuals[:1] }, "got 1 name"},
		{"residuals per block", func(m *Manifest) { m.Blocks[0].Residuals = append(m.Blocks[0].Residuals, "x") }, "3 residuals for 1 blocks"},
		{"repeated residual", func(m *Manifest) { m.Blocks[0].Residuals[1] = "embed" }, `residual "embed" appears twice`},
		{"repeated stack", func(m *Manifest) { m.Blocks = append(m.Blocks, m.Blocks[0]) }, "appears twice"},
		{"vocab 0", func(m *Manifest) { m.VocabSize = 0 }, "field vocab_size is 0; it must be positive"},
		{"negative hidden", func(m *Manifest) { m.HiddenSize = -4 }, "may not be negative (got 10, -4, 1, 0, 0)"},
		{"cls without labels", func(m *Manifest) { m.Objective, m.NumLabels = "cls", 0 }, "field num_labels is 0"},
		{"mask not an input", func(m *Manifest) { m.Linears[1].Mask = "decoder_attention_mask" }, `mask "decoder_attention_mask" is not one of the inputs`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validManifest()
			c.edit(m)
			if err := m.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"format": 1,`), 0o644)
	if _, err := ReadManifest(dir); !badinput.Is(err) || !strings.Contains(err.Error(), ManifestFile) {
		t.Fatalf("broken JSON: %v", err)
	}
	if _, err := ReadManifest(t.TempDir()); !badinput.Is(err) || !strings.Contains(err.Error(), "migu export") {
		t.Fatalf("missing manifest: %v", err)
	}
}

func TestStaging(t *testing.T) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "model")
	s, err := Stage(dest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir, "a"), []byte("x"), 0o644)
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatal("destination visible before commit")
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Abort() // no-op after commit
	if _, err := os.Stat(filepath.Join(dest, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := Stage(dest); !badinput.Is(err) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("non-empty destination: %v", err)
	}
	other, err := Stage(filepath.Join(parent, "other"))
	if err != nil {
		t.Fatal(err)
	}
	other.Abort()
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Fatalf("abort left %v", entries)
	}
}
