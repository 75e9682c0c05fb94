package modeldir

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
)

// Folder is a model folder opened and checked: its manifest and its
// forward graph, loaded (external data mapped lazily). Close releases the
// graph's mappings.
type Folder struct {
	Dir      string
	Manifest *Manifest
	Model    *onnx.Model
}

// Open reads a model folder and checks that its parts agree before any
// command works with it: migu.json is valid on its own (ReadManifest),
// model.onnx loads (no name defined twice, external data in bounds),
// every name the manifest gives — graph inputs and outputs, each linear's
// weight, bias, node, input and output, the residual values of its block
// stacks — exists in the graph, and config.json, when present, holds no
// negative size. Every command that reads a model folder goes through
// Open, so a bad folder is refused with one line naming the file and the
// field, before anything is written.
func Open(dir string) (*Folder, error) {
	man, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := CheckConfig(dir); err != nil {
		return nil, err
	}
	m, err := onnx.Load(filepath.Join(dir, ModelFile))
	if err != nil {
		return nil, err
	}
	if err := CheckGraph(man, m.Graph()); err != nil {
		m.Close()
		return nil, badinput.Errorf("%s: %v (the graph is %s)", filepath.Join(dir, ManifestFile), err, filepath.Join(dir, ModelFile))
	}
	return &Folder{Dir: dir, Manifest: man, Model: m}, nil
}

// Check opens dir as Open does and closes it again, for commands that
// read the folder through other means (an ONNX Runtime session, say).
func Check(dir string) (*Manifest, error) {
	f, err := Open(dir)
	if err != nil {
		return nil, err
	}
	f.Close()
	return f.Manifest, nil
}

// Close releases the graph's mapped external data.
func (f *Folder) Close() error {
	if f == nil || f.Model == nil {
		return nil
	}
	return f.Model.Close()
}

// CheckGraph checks that every name the manifest gives exists in g: the
// interface as graph inputs and outputs, each linear's weight as an
// initializer (training turns it into an input), its node by name, and
// its bias, input and output, and the block residuals, as values the
// graph defines.
func CheckGraph(man *Manifest, g *onnx.Graph) error {
	values := map[string]bool{}
	inits := map[string]int64{} // name → element count
	for _, vi := range g.P.Input {
		values[vi.GetName()] = true
	}
	for _, t := range g.P.Initializer {
		n := int64(1)
		for _, d := range t.GetDims() {
			n *= d
		}
		inits[t.GetName()] = n
		values[t.GetName()] = true
	}
	nodes := map[string]bool{}
	for _, n := range g.P.Node {
		nodes[n.GetName()] = true
		for _, o := range n.Output {
			values[o] = true
		}
	}
	for _, in := range man.Inputs {
		if g.Input(in) == nil {
			return fmt.Errorf("field inputs: %q is not an input of the graph", in)
		}
	}
	for _, out := range man.Outputs {
		if g.Output(out) == nil {
			return fmt.Errorf("field outputs: %q is not an output of the graph", out)
		}
	}
	for i, l := range man.Linears {
		at := fmt.Sprintf("linears[%d] (%s)", i, l.Name)
		n, ok := inits[l.Weight]
		if !ok {
			return fmt.Errorf("%s: weight %q is not an initializer of the graph", at, l.Weight)
		}
		if n != l.DIn*l.DOut {
			return fmt.Errorf("%s: weight %q holds %d values, not d_in × d_out = %d × %d", at, l.Weight, n, l.DIn, l.DOut)
		}
		if !nodes[l.Node] {
			return fmt.Errorf("%s: node %q is not a node of the graph", at, l.Node)
		}
		for _, v := range []struct{ field, name string }{{"bias", l.Bias}, {"input", l.Input}, {"output", l.Output}} {
			if v.name != "" && !values[v.name] {
				return fmt.Errorf("%s: %s %q is not a value of the graph", at, v.field, v.name)
			}
		}
	}
	for i, s := range man.Blocks {
		for k, r := range s.Residuals {
			if !values[r] {
				return fmt.Errorf("blocks[%d]: residuals[%d] %q is not a value of the graph", i, k, r)
			}
		}
	}
	return nil
}

// CheckConfig refuses a config.json in dir whose size fields (vocab_size,
// hidden_size, num_hidden_layers, d_model, …: the keys sizeField matches)
// are negative or not whole numbers. Commands that copy config.json along
// (train, merge) would otherwise pass the mistake on to the next reader.
// A folder without config.json passes: the manifest carries the sizes
// training needs.
func CheckConfig(dir string) error {
	path := filepath.Join(dir, ConfigFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return badinput.Wrap(err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return badinput.Errorf("%s: not a JSON object: %v", path, strings.TrimPrefix(err.Error(), "json: "))
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !sizeField(k) {
			continue
		}
		var v float64
		if json.Unmarshal(cfg[k], &v) != nil {
			continue // null or a structure: the exporter that reads it decides
		}
		if v < 0 || v != math.Trunc(v) {
			name := k
			if q := strconv.Quote(k); q[1:len(q)-1] != k {
				name = q // a key with control characters stays on one line
			}
			return badinput.Errorf("%s: field %s is %s; sizes must be whole numbers ≥ 0", path, name, strings.TrimSpace(string(cfg[k])))
		}
	}
	return nil
}

// sizeKeys are config.json size fields whose names sizeField's suffixes
// do not catch (T5's and GPT-2's short names).
var sizeKeys = map[string]bool{
	"d_model": true, "d_ff": true, "d_kv": true, "num_layers": true, "num_heads": true,
	"n_embd": true, "n_layer": true, "n_head": true, "n_inner": true, "n_positions": true,
	"n_ctx": true, "num_labels": true,
}

// sizeField says whether a config.json key names a size or a count.
func sizeField(k string) bool {
	if sizeKeys[k] {
		return true
	}
	for _, suffix := range []string{"_size", "_layers", "_heads", "_dim", "_embeddings", "_buckets", "_distance"} {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}
