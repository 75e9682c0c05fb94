// Package kvcache is the contract between the exporters that build
// key/value-cache graphs for a model family and the code that runs them
// (eval's generation and shared-context scoring): the names of the cache's
// inputs and outputs, and a registry of graph builders by architecture, so
// that a runner reads a model folder without importing any exporter.
package kvcache

import (
	"sort"
	"strings"
	"sync"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/onnx"
)

// LogitsLen names the cached decoder's input [1] (int64): how many of the
// last new positions get logits — 1 for generation, which reads only the
// last, and every new position for scoring continuations after a cached
// context.
const LogitsLen = "logits_len"

// Cache describes the key/value cache of a cached decoder: per layer, the
// names of the past inputs and present outputs, each [batch, kv_heads,
// length, head_dim] in transformers' layout, so the present of one step is
// fed as the past of the next.
type Cache struct {
	Layers, KVHeads, HeadDim int
	PastKey, PastValue       []string
	PresentKey, PresentValue []string
	// CrossKey and CrossValue name, for an encoder-decoder, the
	// cross-attention keys and values the encoder graph returns and every
	// decoder step takes ([batch, heads, src, head_dim]); empty otherwise.
	CrossKey, CrossValue []string
}

// Graphs are the cached graphs of one model folder. Their weights may be
// external data in the folder's own files (each Model's Dir is the
// folder), as the forward graph's are, so that building them reads no
// weight: a runner loads them with that folder as the external data
// folder, and the weights are read once, by the runtime.
type Graphs struct {
	// Encoder, for encoder-decoders only, runs once per prompt: input_ids
	// and attention_mask in, the cross-attention keys and values out.
	Encoder *onnx.Model
	// Decoder runs once per step: the new tokens, the mask, the past keys
	// and values (and cross keys and values) in; logits and the present
	// keys and values out.
	Decoder *onnx.Model
	Cache   *Cache
}

// Builder builds, in memory, the cached graphs of the model folder dir
// from its config.json and its own weights (referred to in the folder's
// files where the folder keeps them external).
type Builder func(dir string) (*Graphs, error)

var (
	mu       sync.RWMutex
	builders = map[string]Builder{}
)

// Register makes b the cached-graph builder of migu.json's architecture
// name; the exporters package calls it from init, so a program that runs
// cached graphs imports it. Registering a name twice panics.
func Register(architecture string, b Builder) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := builders[architecture]; dup {
		panic("kvcache: architecture registered twice: " + architecture)
	}
	builders[architecture] = b
}

// Build builds the cached graphs of the model folder dir, whose migu.json
// names architecture. An architecture without a registered builder is bad
// input naming the ones that have one.
func Build(dir, architecture string) (*Graphs, error) {
	mu.RLock()
	b, ok := builders[architecture]
	names := make([]string, 0, len(builders))
	for n := range builders {
		names = append(names, n)
	}
	mu.RUnlock()
	if !ok {
		sort.Strings(names)
		return nil, badinput.Errorf("%s: no key/value-cache graphs for architecture %q (built for: %s)", dir, architecture, strings.Join(names, ", "))
	}
	return b(dir)
}
