// Package ollama finds the GGUF file behind a model that ollama has pulled,
// so `migu export --from ollama:NAME[:TAG]` can read it in place. ollama
// keeps one JSON manifest per model and tag, whose layers name content-
// addressed blobs; the layer of media type application/vnd.ollama.image.model
// is the model's GGUF.
package ollama

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
)

// Prefix marks an ollama model reference in place of a file path.
const Prefix = "ollama:"

// Default parts of a model name, as ollama fills them.
const (
	DefaultHost      = "registry.ollama.ai"
	DefaultNamespace = "library"
	DefaultTag       = "latest"
)

// Media types of the manifest layers migu looks at.
const (
	mediaModel     = "application/vnd.ollama.image.model"
	mediaAdapter   = "application/vnd.ollama.image.adapter"
	mediaProjector = "application/vnd.ollama.image.projector"
)

// Name is a parsed model reference: host/namespace/model:tag.
type Name struct {
	Host, Namespace, Model, Tag string
}

// String gives the name in ollama's short form where the defaults allow.
func (n Name) String() string {
	s := n.Model + ":" + n.Tag
	if n.Namespace != DefaultNamespace || n.Host != DefaultHost {
		s = n.Namespace + "/" + s
	}
	if n.Host != DefaultHost {
		s = n.Host + "/" + s
	}
	return s
}

// namePart is what ollama accepts in each part of a name: letters, digits,
// '_', '-' and '.', starting with a letter or digit (ports in hosts too).
var (
	namePart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$`)
	hostPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,349}(:[0-9]{1,5})?$`)
)

// ParseName reads NAME[:TAG], NAMESPACE/NAME[:TAG] or
// HOST/NAMESPACE/NAME[:TAG], filling ollama's defaults.
func ParseName(s string) (Name, error) {
	n := Name{Host: DefaultHost, Namespace: DefaultNamespace, Tag: DefaultTag}
	rest := s
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		n.Tag, rest = rest[i+1:], rest[:i]
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 1:
		n.Model = parts[0]
	case 2:
		n.Namespace, n.Model = parts[0], parts[1]
	case 3:
		n.Host, n.Namespace, n.Model = parts[0], parts[1], parts[2]
	default:
		return Name{}, badinput.Errorf("ollama model %q: a name is [HOST/][NAMESPACE/]MODEL[:TAG]", s)
	}
	for _, p := range []struct{ field, v string }{{"model", n.Model}, {"namespace", n.Namespace}, {"tag", n.Tag}} {
		if !namePart.MatchString(p.v) {
			return Name{}, badinput.Errorf("ollama model %q: %s %q is not a valid name part (letters, digits, _ - .)", s, p.field, p.v)
		}
	}
	if !hostPart.MatchString(n.Host) {
		return Name{}, badinput.Errorf("ollama model %q: host %q is not valid", s, n.Host)
	}
	return n, nil
}

// ModelsDir is where ollama stores models: $OLLAMA_MODELS, else
// ~/.ollama/models.
func ModelsDir() (string, error) {
	if d := os.Getenv("OLLAMA_MODELS"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", badinput.Errorf("ollama models: no home folder (%v); set OLLAMA_MODELS", err)
	}
	return filepath.Join(home, ".ollama", "models"), nil
}

// Model is what a manifest says about a pulled model.
type Model struct {
	Name     Name
	Manifest string // path of the manifest file
	GGUF     string // path of the model blob
	Size     int64  // its size in bytes, as the manifest records it
}

type manifest struct {
	SchemaVersion int     `json:"schemaVersion"`
	Layers        []layer `json:"layers"`
}

type layer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// digestRE is a sha256 digest as manifests write it.
var digestRE = regexp.MustCompile(`^sha256[:-]([0-9a-f]{64})$`)

// Resolve finds the GGUF blob of the model ref (without the "ollama:"
// prefix) in the models folder dir ("" for ModelsDir). Models that need
// more than the GGUF to run as ollama runs them — an adapter layer or a
// vision projector — are refused, naming the layer.
func Resolve(ref, dir string) (*Model, error) {
	name, err := ParseName(ref)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		if dir, err = ModelsDir(); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, "manifests", name.Host, name.Namespace, name.Model, name.Tag)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badinput.Errorf("ollama model %s: no manifest %s (pull it with `ollama pull %s`, or set OLLAMA_MODELS to the folder that holds ollama's models)", name, path, name)
	}
	if err != nil {
		return nil, badinput.Wrap(err)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badinput.Errorf("%s: not an ollama manifest: %v", path, err)
	}
	var model *layer
	for i, l := range m.Layers {
		switch l.MediaType {
		case mediaModel:
			if model != nil {
				return nil, badinput.Errorf("%s: layers[%d]: a second model layer", path, i)
			}
			model = &m.Layers[i]
		case mediaAdapter, mediaProjector:
			return nil, badinput.Errorf("%s: layers[%d] is %s: migu exports the base model only; export it from its GGUF file instead", path, i, l.MediaType)
		}
	}
	if model == nil {
		return nil, badinput.Errorf("%s: no layer of media type %s", path, mediaModel)
	}
	d := digestRE.FindStringSubmatch(model.Digest)
	if d == nil {
		return nil, badinput.Errorf("%s: model layer digest %q is not sha256:<64 hex digits>", path, model.Digest)
	}
	blob := filepath.Join(dir, "blobs", "sha256-"+d[1])
	st, err := os.Stat(blob)
	if err != nil {
		return nil, badinput.Errorf("ollama model %s: blob %s is missing (re-pull the model)", name, blob)
	}
	if model.Size > 0 && st.Size() != model.Size {
		return nil, badinput.Errorf("ollama model %s: blob %s has %d bytes, the manifest says %d (re-pull the model)", name, blob, st.Size(), model.Size)
	}
	return &Model{Name: name, Manifest: path, GGUF: blob, Size: st.Size()}, nil
}

// String describes the resolved model.
func (m *Model) String() string {
	return fmt.Sprintf("ollama model %s (%s)", m.Name, m.GGUF)
}
