package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/migu-ml/migu/internal/badinput"
)

// The file names Hugging Face uses for a checkpoint's weights.
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// Checkpoint presents the tensors of a Hugging Face checkpoint, one file or
// several shards, as one set. Like File it is safe for concurrent readers.
type Checkpoint struct {
	files []*File          // in shard-name order
	where map[string]*File // tensor name → the shard holding it
	names []string         // sorted
	meta  map[string]string
}

// OpenDir opens the checkpoint in dir: model.safetensors.index.json and its
// shards when the index exists, else model.safetensors.
func OpenDir(dir string) (*Checkpoint, error) {
	index := filepath.Join(dir, IndexFile)
	if _, err := os.Stat(index); err == nil {
		return OpenIndex(index)
	}
	single := filepath.Join(dir, SingleFile)
	f, err := Open(single)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badinput.Errorf("safetensors: %s holds neither %s nor %s", dir, IndexFile, SingleFile)
	}
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{files: []*File{f}, where: map[string]*File{}, names: f.Names(), meta: f.Metadata()}
	for _, name := range c.names {
		c.where[name] = f
	}
	return c, nil
}

// OpenIndex opens a sharded checkpoint from its index ({"metadata": {...},
// "weight_map": {tensor: shard file}}). Shards must lie inside the index's
// directory, and the weight map must agree with the shards exactly: every
// tensor it names is in its shard, and no shard holds a tensor it does not
// map there. Index metadata values that are not strings (total_size) are
// kept as their JSON text.
func OpenIndex(path string) (*Checkpoint, error) {
	weights, meta, err := readIndex(path)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer root.Close()

	byShard := map[string][]string{}
	for tensor, shard := range weights {
		byShard[shard] = append(byShard[shard], tensor)
	}
	c := &Checkpoint{where: make(map[string]*File, len(weights)), meta: meta}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		// os.Root refuses names that leave the directory, through ".." or
		// through symbolic links.
		display := filepath.Join(filepath.Dir(path), shard)
		fh, err := root.Open(shard)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, formatErr(path, "", "weight_map names shard %q, which does not exist", shard)
		}
		if err != nil {
			return nil, fmt.Errorf("safetensors: %s: shard %q: %w", path, shard, err)
		}
		f, err := openFile(fh, display)
		fh.Close()
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, f)
		for _, tensor := range byShard[shard] {
			if _, ok := f.h.tensors[tensor]; !ok {
				return nil, formatErr(path, tensor, "weight_map puts it in %s, which has no such tensor", shard)
			}
			c.where[tensor] = f
		}
		for _, tensor := range f.h.names {
			switch mapped, ok := weights[tensor]; {
			case !ok:
				return nil, formatErr(path, tensor, "shard %s holds it, but weight_map does not list it", shard)
			case mapped != shard:
				return nil, formatErr(path, tensor, "in two shards: %s (per weight_map) and %s", mapped, shard)
			}
		}
	}
	c.names = slices.Sorted(maps.Keys(c.where))
	ok = true
	return c, nil
}

// readIndex parses an index file strictly: duplicate keys, a missing or
// empty weight_map and shard names that escape the directory are errors.
func readIndex(path string) (map[string]string, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxHeaderSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: reading %s: %w", path, err)
	}
	if len(data) > MaxHeaderSize {
		return nil, nil, formatErr(path, "", "index is larger than %d bytes", MaxHeaderSize)
	}
	var weights, meta map[string]string
	err = walkObject(data, func(key string, val json.RawMessage) error {
		switch key {
		case "weight_map":
			if !isObject(val) {
				return formatErr(path, "", "weight_map is %s, want an object of tensor → shard file", describe(val))
			}
			weights = map[string]string{}
			return walkObject(val, func(tensor string, v json.RawMessage) error {
				var shard string
				if !isString(v) || json.Unmarshal(v, &shard) != nil {
					return formatErr(path, tensor, "weight_map value is %s, want a shard file name", describe(v))
				}
				if !filepath.IsLocal(shard) {
					return formatErr(path, tensor, "weight_map shard %q is not a relative path inside the index's directory", shard)
				}
				weights[tensor] = filepath.Clean(shard)
				return nil
			})
		case "metadata":
			if !isObject(val) {
				return formatErr(path, "", "metadata is %s, want an object", describe(val))
			}
			meta = map[string]string{}
			return walkObject(val, func(k string, v json.RawMessage) error {
				var s string
				if isString(v) && json.Unmarshal(v, &s) == nil {
					meta[k] = s
				} else {
					meta[k] = string(v)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		var dup *dupKeyError
		switch {
		case errors.As(err, &dup):
			return nil, nil, formatErr(path, "", "key %q appears twice in the index", dup.key)
		case errors.Is(err, ErrFormat):
			return nil, nil, err
		}
		return nil, nil, formatErr(path, "", "index is not valid JSON: %v", err)
	}
	if len(weights) == 0 {
		return nil, nil, formatErr(path, "", "index has no weight_map entries")
	}
	return weights, meta, nil
}

// Close closes every shard.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files, c.where, c.names = nil, nil, nil
	return errors.Join(errs...)
}

// Files are the open shards, in name order (one for model.safetensors).
func (c *Checkpoint) Files() []*File { return slices.Clone(c.files) }

// Names lists every tensor of every shard, sorted.
func (c *Checkpoint) Names() []string { return slices.Clone(c.names) }

// Metadata is the index's metadata, or the single file's __metadata__.
func (c *Checkpoint) Metadata() map[string]string { return maps.Clone(c.meta) }

// File is the shard that holds a tensor.
func (c *Checkpoint) File(name string) (*File, error) {
	f, ok := c.where[name]
	if !ok {
		return nil, notFound(c.label(), name)
	}
	return f, nil
}

func (c *Checkpoint) label() string {
	if len(c.files) == 1 {
		return c.files[0].path
	}
	if len(c.files) > 1 {
		return filepath.Dir(c.files[0].path)
	}
	return "checkpoint"
}

// Info describes a tensor (see File.Info).
func (c *Checkpoint) Info(name string) (TensorInfo, error) {
	f, err := c.File(name)
	if err != nil {
		return TensorInfo{}, err
	}
	return f.Info(name)
}

// Bytes is a tensor's raw data, without copying (see File.Bytes).
func (c *Checkpoint) Bytes(name string) ([]byte, error) {
	f, err := c.File(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// Float32 converts a tensor to float32 (see File.Float32).
func (c *Checkpoint) Float32(name string) ([]float32, error) {
	f, err := c.File(name)
	if err != nil {
		return nil, err
	}
	return f.Float32(name)
}

// Release gives a tensor's mapped pages back (see File.Release).
func (c *Checkpoint) Release(name string) {
	if f, err := c.File(name); err == nil {
		f.Release(name)
	}
}

// ReadInto converts a tensor into dst (see File.ReadInto).
func (c *Checkpoint) ReadInto(name string, dst []float32) error {
	f, err := c.File(name)
	if err != nil {
		return err
	}
	return f.ReadInto(name, dst)
}
