// Package adapters is the plug-in layer for parameter-efficient fine-tuning:
// an adapter rewrites a forward model around chosen linear layers of
// migu.json, declares the parameters training updates and the values whose
// magnitudes give their MIGU masks, saves and loads its state in PEFT's
// folder layout, and merges into a new model folder.
//
// Adapter kinds register themselves by name with the settings they take
// (package lora registers "lora"). Training, evaluation and the CLI know
// adapters only through this registry; the program links in the kinds it
// offers with blank imports, e.g. `import _ "github.com/migu-ml/migu/lora"`.
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
	// Masks say which tap masks which parameter; their Tap names a point.
	Masks []migu.Rule
}

// Param is one trainable tensor.
type Param struct {
	Name  string
	Shape []int64
	Init  []float32 // initial values, row-major
}

// ParamNames lists the parameter names, for train.GraphOptions.Names.
func (inj *Injection) ParamNames() []string {
	names := make([]string, len(inj.Params))
	for i, p := range inj.Params {
		names[i] = p.Name
	}
	return names
}

// Option is one setting a kind takes. Its name is also its command-line
// flag (--<name>), and kinds that share a setting (the rank of LoRA and
// DoRA) declare it alike.
type Option struct {
	Name    string // e.g. "lora-r"
	Type    string // "int", "float64", "bool" or "string": how the flag shows it (as pflag names types)
	Default string // the value when the setting is not given, as text
	Help    string
}

// Options are settings by option name, as text. A setting a kind declares
// but Options lacks takes its default, and settings it does not declare
// are ignored, so one Options can carry every kind's flags.
type Options map[string]string

// Kind is a registered adapter type: how to make a fresh one from its
// settings and how to recognise and read a saved one.
type Kind struct {
	Name     string // the method name, e.g. "lora"
	PEFTType string // adapter_config.json's peft_type, e.g. "LORA"
	// Claims reports whether an adapter_config.json (raw) is this kind's;
	// nil means its peft_type is PEFTType. Kinds sharing a peft_type (LoRA
	// and DoRA, told apart by use_dora) must both have one.
	Claims func(raw []byte) bool
	// Options are the settings New reads, in the order help shows them.
	Options []Option
	// New makes a fresh adapter from settings with the defaults filled in.
	New func(Options) (Adapter, error)
	// Load reads an adapter folder this kind claims.
	Load func(dir string) (Adapter, error)
}

// Settle returns the settings of o that k declares, defaults filled in:
// what New receives and what a run's identity records.
func (k Kind) Settle(o Options) Options {
	out := Options{}
	for _, opt := range k.Options {
		v, ok := o[opt.Name]
		if !ok {
			v = opt.Default
		}
		out[opt.Name] = v
	}
	return out
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
)

// Register adds an adapter kind; packages call it from init. Registering
// a name twice, or a PEFT type twice without Claims on both, panics.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	for _, other := range kinds {
		if other.Name == k.Name || (other.PEFTType == k.PEFTType && (other.Claims == nil || k.Claims == nil)) {
			panic("adapters: kind " + k.Name + " (" + k.PEFTType + ") registered twice")
		}
	}
	kinds[k.Name] = k
}

// Lookup finds a kind by name; an unknown name is bad input listing the
// known ones.
func Lookup(name string) (Kind, error) {
	mu.RLock()
	defer mu.RUnlock()
	if k, ok := kinds[name]; ok {
		return k, nil
	}
	return Kind{}, badinput.Errorf("unknown adapter kind %q (known: %s)", name, strings.Join(namesLocked(), ", "))
}

// New makes a fresh adapter of the named kind from the settings o.
func New(name string, o Options) (Adapter, error) {
	k, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	if k.New == nil {
		return nil, badinput.Errorf("adapter kind %s can only be loaded, not trained from scratch", name)
	}
	return k.New(k.Settle(o))
}

// Names lists the registered kinds' names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

// Kinds lists the registered kinds, sorted by name.
func Kinds() []Kind {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]Kind, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AllOptions lists every kind's options once each, kind by kind in
// declaration order. Two kinds declaring one name differently panic, as
// their flags would clash.
func AllOptions() []Option {
	var out []Option
	seen := map[string]Option{}
	for _, k := range Kinds() {
		for _, o := range k.Options {
			if prev, ok := seen[o.Name]; ok {
				if prev != o {
					panic("adapters: option " + o.Name + " is declared differently by two kinds")
				}
				continue
			}
			seen[o.Name] = o
			out = append(out, o)
		}
	}
	return out
}

// Defaults are every kind's settings at their defaults.
func Defaults() Options {
	out := Options{}
	for _, o := range AllOptions() {
		out[o.Name] = o.Default
	}
	return out
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

// Load reads an adapter folder with the kind that claims its
// adapter_config.json (by peft_type, or the kind's Claims). A peft_type no
// kind reads is bad input listing the known ones; a folder of a known
// peft_type that no kind claims goes to a kind of that type, whose Load
// says what it does not read.
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
	var claimed, typed []Kind
	var known []string
	for _, k := range Kinds() {
		if !slices.Contains(known, k.PEFTType) {
			known = append(known, k.PEFTType)
		}
		if k.PEFTType == head.PEFTType {
			typed = append(typed, k)
		}
		if (k.Claims == nil && k.PEFTType == head.PEFTType) || (k.Claims != nil && k.Claims(raw)) {
			claimed = append(claimed, k)
		}
	}
	switch {
	case len(claimed) == 1:
		return claimed[0].Load(dir)
	case len(claimed) > 1:
		return nil, fmt.Errorf("adapters: %s is claimed by kinds %s and %s", filepath.Join(dir, ConfigFile), claimed[0].Name, claimed[1].Name)
	case len(typed) > 0:
		return typed[0].Load(dir)
	}
	sort.Strings(known)
	return nil, badinput.Errorf("%s: peft_type %q is not an adapter kind migu reads (known: %s)", filepath.Join(dir, ConfigFile), head.PEFTType, strings.Join(known, ", "))
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
