// Package modeldir reads and writes migu's model folder: the forward graph
// (model.onnx + model.onnx.data), the Hugging Face config.json and
// tokenizer.json it came from, and migu.json, the manifest that tells
// training and adapters which linear layers exist and what they do. Code
// reads the manifest; it never guesses roles from node names.
package modeldir

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// File names inside a model folder.
const (
	ManifestFile  = "migu.json"
	ModelFile     = "model.onnx"
	DataFile      = "model.onnx.data"
	ConfigFile    = "config.json"
	TokenizerFile = "tokenizer.json"
	// TokenizerConfigFile is Hugging Face's tokenizer_config.json: the chat
	// template and the special tokens' strings, where the model has them.
	TokenizerConfigFile = "tokenizer_config.json"
)

// FormatVersion is the migu.json format this code writes and reads.
const FormatVersion = 1

// Role says what a linear layer does; MIGU and LoRA select layers by role.
type Role string

// The roles of DESIGN.md: attention projections, feed-forward linears and
// the output head.
const (
	RoleQ       Role = "q"
	RoleK       Role = "k"
	RoleV       Role = "v"
	RoleO       Role = "o"
	RoleFFNIn   Role = "ffn_in"   // up projection (Llama up_proj, T5 wi / wi_1, RoBERTa intermediate)
	RoleFFNGate Role = "ffn_gate" // gate projection (Llama gate_proj, T5 v1.1 wi_0)
	RoleFFNOut  Role = "ffn_out"  // down projection (Llama down_proj, T5 wo, RoBERTa output)
	RoleHead    Role = "head"     // LM head, MLM decoder or classifier output
)

// Roles lists every role in a stable order.
var Roles = []Role{RoleQ, RoleK, RoleV, RoleO, RoleFFNIn, RoleFFNGate, RoleFFNOut, RoleHead}

// ParseRole checks a role name from a flag or file.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", badinput.Errorf("unknown layer role %q (roles: q, k, v, o, ffn_in, ffn_gate, ffn_out, head)", s)
}

// Linear is one linear layer y = x·W (+ b) of the forward graph.
type Linear struct {
	// Name identifies the layer in metrics and adapters, following the
	// Hugging Face module path without ".weight" (e.g.
	// "model.layers.0.self_attn.q_proj"), so PEFT names map directly.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Block is the transformer block index, -1 for layers outside blocks.
	Block int `json:"block"`
	// Stack is "encoder" or "decoder" for T5, empty otherwise.
	Stack string `json:"stack,omitempty"`
	// Weight is the initializer holding W in MatMul orientation [d_in, d_out].
	Weight string `json:"weight"`
	// Bias is the bias initializer, if the layer has one.
	Bias string `json:"bias,omitempty"`
	// Node is the MatMul node computing x·W; Input is x and Output is the
	// layer's output y (after the bias, when there is one).
	Node   string `json:"node"`
	Input  string `json:"input"`
	Output string `json:"output"`
	DIn    int64  `json:"d_in"`
	DOut   int64  `json:"d_out"`
	// Tied is set when W is shared with an embedding (a tied LM head).
	Tied string `json:"tied,omitempty"`
	// Mask is the graph input, a [batch, seq] padding mask, whose
	// positions the layer's output lies on; MIGU's taps use it to leave
	// padding out. The exporter fills it in where a model has several
	// sequences (T5's decoder layers lie on decoder_attention_mask, its
	// cross-attention keys and values on the encoder's attention_mask).
	// Empty means attention_mask, as in folders written before the field.
	Mask string `json:"mask,omitempty"`
}

// PaddingMask is the graph input holding the padding mask of the layer's
// output positions: Mask, or attention_mask when Mask is empty.
func (l Linear) PaddingMask() string {
	if l.Mask == "" {
		return "attention_mask"
	}
	return l.Mask
}

// Manifest is the content of migu.json.
type Manifest struct {
	Format       int    `json:"format"`
	Architecture string `json:"architecture"` // llama, t5, roberta
	// Objective is the default training objective: clm, seq2seq, mlm or cls.
	Objective string `json:"objective"`
	// Inputs and Outputs are the graph's interface in order.
	Inputs  []string `json:"inputs"`
	Outputs []string `json:"outputs"`
	// Dims of the model, for adapters, training and reports.
	VocabSize  int64 `json:"vocab_size"`
	HiddenSize int64 `json:"hidden_size"`
	NumLayers  int   `json:"num_layers"`
	MaxLength  int64 `json:"max_length,omitempty"` // 0: no limit from positions (relative or rotary)
	NumLabels  int   `json:"num_labels,omitempty"` // classification heads
	// SpecialTokens maps bos, eos, pad, unk, mask, decoder_start to ids.
	SpecialTokens map[string]int64 `json:"special_tokens"`
	Linears       []Linear         `json:"linears"`
	// Blocks lists, per stack of transformer blocks, the residual-stream
	// values at the block boundaries. Activation recomputation (train's
	// --recompute layers) keeps these values and recomputes everything
	// between them in the backward pass. Folders written before this field
	// existed lack it.
	Blocks []BlockStack `json:"blocks,omitempty"`
	// Source says which exporter wrote the graph and from what.
	Source Source `json:"source"`
}

// BlockStack is one stack of transformer blocks: Llama's decoder,
// RoBERTa's encoder, T5's encoder or decoder.
type BlockStack struct {
	// Stack names the stack as Linear.Stack does: "encoder" or "decoder"
	// for T5, empty for single-stack models.
	Stack string `json:"stack,omitempty"`
	// Residuals holds, in order, the value entering block 0, the value
	// between each pair of blocks and the value leaving the last block
	// (blocks + 1 names).
	Residuals []string `json:"residuals"`
}

// Source records the provenance of a model folder.
type Source struct {
	Exporter string `json:"exporter"` // "migu" or "python"
	From     string `json:"from,omitempty"`
	Version  string `json:"version,omitempty"`
}

// LinearsWithRoles returns the linears whose role is in roles, in manifest
// order; an empty set selects every linear.
func (m *Manifest) LinearsWithRoles(roles ...Role) []Linear {
	want := map[Role]bool{}
	for _, r := range roles {
		want[r] = true
	}
	var out []Linear
	for _, l := range m.Linears {
		if len(roles) == 0 || want[l.Role] {
			out = append(out, l)
		}
	}
	return out
}

// Validate checks the manifest's internal consistency.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format %d, this migu reads format %d", m.Format, FormatVersion)
	}
	if m.Architecture == "" {
		return fmt.Errorf("field architecture is empty")
	}
	switch m.Objective {
	case "clm", "seq2seq", "mlm", "cls":
	default:
		return fmt.Errorf("field objective %q is not one of clm, seq2seq, mlm, cls", m.Objective)
	}
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return fmt.Errorf("fields inputs and outputs must name the graph's interface")
	}
	// The language-model objectives size their loss by the vocabulary, a
	// classification head by its labels.
	if m.Objective == "cls" && m.NumLabels <= 0 {
		return fmt.Errorf("field num_labels is %d; a classification model needs at least 1", m.NumLabels)
	}
	if m.Objective != "cls" && m.VocabSize <= 0 {
		return fmt.Errorf("field vocab_size is %d; it must be positive", m.VocabSize)
	}
	if m.VocabSize < 0 || m.HiddenSize < 0 || m.NumLayers < 0 || m.MaxLength < 0 || m.NumLabels < 0 {
		return fmt.Errorf("fields vocab_size, hidden_size, num_layers, max_length and num_labels may not be negative (got %d, %d, %d, %d, %d)", m.VocabSize, m.HiddenSize, m.NumLayers, m.MaxLength, m.NumLabels)
	}
	inputs := map[string]bool{}
	for _, in := range m.Inputs {
		inputs[in] = true
	}
	seen := map[string]bool{}
	for i, l := range m.Linears {
		if l.Name == "" || l.Weight == "" || l.Node == "" || l.Output == "" {
			return fmt.Errorf("linears[%d]: name, weight, node and output are required", i)
		}
		if _, err := ParseRole(string(l.Role)); err != nil {
			return fmt.Errorf("linears[%d] (%s): %v", i, l.Name, err)
		}
		if l.DIn <= 0 || l.DOut <= 0 {
			return fmt.Errorf("linears[%d] (%s): d_in and d_out must be positive", i, l.Name)
		}
		if l.Mask != "" && !inputs[l.Mask] {
			return fmt.Errorf("linears[%d] (%s): mask %q is not one of the inputs", i, l.Name, l.Mask)
		}
		if seen[l.Name] {
			return fmt.Errorf("linears[%d]: name %q appears twice", i, l.Name)
		}
		seen[l.Name] = true
	}
	return m.validateBlocks()
}

// validateBlocks checks that every stack names each of its boundaries
// once, and as many boundaries as the linears table has blocks plus one.
func (m *Manifest) validateBlocks() error {
	stacks := map[string]bool{}
	for i, s := range m.Blocks {
		if stacks[s.Stack] {
			return fmt.Errorf("blocks[%d]: stack %q appears twice", i, s.Stack)
		}
		stacks[s.Stack] = true
		if len(s.Residuals) < 2 {
			return fmt.Errorf("blocks[%d]: residuals needs the values entering and leaving the blocks, got %d name(s)", i, len(s.Residuals))
		}
		names := map[string]bool{}
		for k, r := range s.Residuals {
			if r == "" {
				return fmt.Errorf("blocks[%d]: residuals[%d] is empty", i, k)
			}
			if names[r] {
				return fmt.Errorf("blocks[%d]: residual %q appears twice", i, r)
			}
			names[r] = true
		}
		if n := m.blockCount(s.Stack); n > 0 && len(s.Residuals) != n+1 {
			return fmt.Errorf("blocks[%d]: %d residuals for %d blocks (want blocks + 1)", i, len(s.Residuals), n)
		}
	}
	return nil
}

// blockCount is the number of blocks the linears table shows for a stack:
// one more than the highest block index.
func (m *Manifest) blockCount(stack string) int {
	n := 0
	for _, l := range m.Linears {
		if l.Stack == stack && l.Block >= 0 {
			n = max(n, l.Block+1)
		}
	}
	return n
}

// ReadManifest loads and validates migu.json from a model folder.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, badinput.Errorf("%s: no %s; is this a model folder made by `migu export`?", dir, ManifestFile)
		}
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, badinput.Errorf("%s: %v", path, err)
	}
	return &m, nil
}

// WriteManifest writes migu.json atomically.
func WriteManifest(dir string, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ManifestFile), append(data, '\n'))
}

// SortedSpecialTokens lists special token names in a stable order.
func (m *Manifest) SortedSpecialTokens() []string {
	names := make([]string, 0, len(m.SpecialTokens))
	for k := range m.SpecialTokens {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
