// Package adapters is the plug-in layer for parameter-efficient fine-tuning:
// an adapter rewrites a forward model around chosen linear layers of
// migu.json, declares the parameters training updates and the values whose
// magnitudes give their MIGU masks, saves and loads its state in PEFT's
// folder layout, and merges into a new model folder.
//
// Adapter kinds register themselves by name (package lora registers
// "lora"); code that loads adapter folders by their adapter_config.json
// imports the kinds it accepts, e.g. `import _ "github.com/migu-ml/migu/lora"`.
package adapters

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/migu"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

// File names of an adapter folder, as PEFT's save_pretrained writes them.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// Adapter is one configured adapter: fresh (initialised by Inject from a
// seed) or loaded from a folder (its trained values).
type Adapter interface {
	// Name is the adapter kind, e.g. "lora".
	Name() string
	// Layers lists the linear layers of man the adapter attaches to; a
	// loaded adapter that does not fit man is bad input naming the tensor.
	Layers(man *modeldir.Manifest) ([]modeldir.Linear, error)
	// Inject rewrites the forward model m in place around Layers(man): it
	// adds the adapter's parameters as float initializers (a loaded
	// adapter's values, else initialised from opt.Seed) and returns what
	// training needs. Layer outputs keep their value names, so man stays
	// valid and its Output fields name the adapted outputs.
	Inject(m *onnx.Model, man *modeldir.Manifest, opt InjectOptions) (*Injection, error)
	// Save writes the adapter folder dir (replacing an earlier adapter
	// folder there) with the parameter values given by initializer name,
	// or the loaded values when values is nil.
	Save(dir string, man *modeldir.Manifest, values map[string][]float32) error
	// Merge folds a loaded adapter into m's weights. It may rewrite man
	// (a tied head is untied so the embedding keeps its values).
	Merge(m *onnx.Model, man *modeldir.Manifest) error
}

// InjectOptions configure Inject.
type InjectOptions struct {
	// Seed initialises fresh parameters reproducibly.
	Seed uint64
	// Training adds the parts that exist only while training (LoRA's
	// dropout); graphs for evaluation and generation leave it false.
	Training bool
}

// Injection is what an injected model gives training.
type Injection struct {
	// Params are the trainable tensors, initializers of the injected model,
	// with their initial values (train.Build turns them into graph inputs).
	Params []Param
	// Points are the values whose per-feature magnitudes MIGU needs
	// (train.GraphOptions.TapPoints).
	Points []migu.Point
	// Masks say which tap masks which parameter.
	Masks []MaskRule
}

// Param is one trainable tensor.
type Param struct {
	Name  string
	Shape []int64
	Init  []float32 // initial values, row-major
}

// MaskRule says that the slices of Param along Axis (its output-feature
// axis) are masked by the MIGU mask of the tap point named Point: feature j
// of the point's magnitudes gates index j of that axis.
type MaskRule struct {
	Param string
	Axis  int
	Point string
}

// ParamNames lists the parameter names, for train.GraphOptions.Names.
func (inj *Injection) ParamNames() []string {
	names := make([]string, len(inj.Params))
	for i, p := range inj.Params {
		names[i] = p.Name
	}
	return names
}

// Kind is a registered adapter type.
type Kind struct {
	Name     string // the method name, e.g. "lora"
	PEFTType string // adapter_config.json's peft_type, e.g. "LORA"
	// Load reads an adapter folder whose peft_type is PEFTType.
	Load func(dir string) (Adapter, error)
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
)

// Register adds an adapter kind; packages call it from init. Registering
// a name or PEFT type twice panics.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	for _, other := range kinds {
		if other.Name == k.Name || other.PEFTType == k.PEFTType {
			panic("adapters: kind " + k.Name + " (" + k.PEFTType + ") registered twice")
		}
	}
	kinds[k.Name] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, error) {
	mu.RLock()
	defer mu.RUnlock()
	if k, ok := kinds[name]; ok {
		return k, nil
	}
	return Kind{}, badinput.Errorf("unknown adapter kind %q (known: %s)", name, strings.Join(namesLocked(), ", "))
}

// Names lists the registered kinds, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

func namesLocked() []string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		names = append(names, "none registered")
	}
	return names
}

// Load reads the adapter folder dir with the kind its adapter_config.json
// names (peft_type).
func Load(dir string) (Adapter, error) {
	raw, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	var head struct {
		PEFTType string `json:"peft_type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, badinput.Errorf("%s: %v", filepath.Join(dir, ConfigFile), err)
	}
	mu.RLock()
	var kind *Kind
	var known []string
	for _, k := range kinds {
		known = append(known, k.PEFTType)
		if k.PEFTType == head.PEFTType {
			kind = &k
		}
	}
	mu.RUnlock()
	if kind == nil {
		sort.Strings(known)
		return nil, badinput.Errorf("%s: peft_type %q is not an adapter kind migu reads (known: %s)", filepath.Join(dir, ConfigFile), head.PEFTType, strings.Join(known, ", "))
	}
	return kind.Load(dir)
}

// ReadConfig returns the bytes of dir's adapter_config.json; a folder
// without one is bad input.
func ReadConfig(dir string) ([]byte, error) {
	path := filepath.Join(dir, ConfigFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badinput.Errorf("%s: no %s; is this an adapter folder written by `migu train` or PEFT's save_pretrained?", dir, ConfigFile)
	}
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	return raw, nil
}

// adapterFiles are the files an adapter folder may hold; WriteDir replaces
// only folders made of them.
var adapterFiles = []string{ConfigFile, WeightsFile, "README.md"}

// WriteDir writes the adapter folder dir atomically: write fills a fresh
// temporary folder beside dir, which then takes dir's place, so readers see
// the old adapter or the new one, never a mix. An existing dir is replaced
// only when it is empty or holds adapter files alone.
func WriteDir(dir string, write func(tmp string) error) error {
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if !slices.Contains(adapterFiles, e.Name()) {
				return badinput.Errorf("%s holds %s, so it is not an adapter folder; choose another folder for the adapter", dir, e.Name())
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return badinput.Wrap(err)
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := write(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	// Move the old folder aside, put the new one in place, then delete the
	// old one; a crash in between leaves the old adapter under .old-*.
	old := ""
	if _, err := os.Stat(dir); err == nil {
		old, err = os.MkdirTemp(parent, "."+filepath.Base(dir)+".old-")
		if err != nil {
			return err
		}
		if err := os.Rename(dir, filepath.Join(old, "adapter")); err != nil {
			os.Remove(old)
			return fmt.Errorf("replacing %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			os.Rename(filepath.Join(old, "adapter"), dir)
			os.Remove(old)
		}
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}
