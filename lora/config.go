package lora

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
)

// AllLinear as a target selects every linear layer except the output head,
// as PEFT's "all-linear" does.
const AllLinear = "all"

// Defaults of the MIGU paper's LoRA runs (and PEFT's, for dropout).
const (
	DefaultR     = 8
	DefaultAlpha = 32
)

// DefaultTargets are the roles LoRA adapts unless told otherwise.
var DefaultTargets = []string{string(modeldir.RoleQ), string(modeldir.RoleV)}

// Config is a LoRA adapter's configuration.
type Config struct {
	// Targets are layer roles (q, k, v, o, ffn_in, ffn_gate, ffn_out,
	// head) or AllLinear; empty means DefaultTargets. A loaded adapter has
	// none: its file names its layers.
	Targets []string
	R       int     // rank; 0 means DefaultR
	Alpha   float64 // scaling numerator; 0 means DefaultAlpha
	// Dropout is the probability of zeroing an input feature of the LoRA
	// branch while training (PEFT's lora_dropout); evaluation graphs have none.
	Dropout float64
	// RSLoRA scales by α/√r instead of α/r (PEFT's use_rslora).
	RSLoRA bool
}

// ParseTargets reads a comma-separated target list such as "q,v" or "all".
func ParseTargets(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if part != AllLinear {
			if _, err := modeldir.ParseRole(part); err != nil {
				return nil, badinput.Errorf("--lora-targets: unknown target %q (roles q, k, v, o, ffn_in, ffn_gate, ffn_out, head, or all)", part)
			}
		}
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	if len(out) == 0 {
		return nil, badinput.Errorf("--lora-targets is empty (give roles such as q,v, or all)")
	}
	return out, nil
}

// withDefaults fills zero fields and checks the ranges.
func (c Config) withDefaults() (Config, error) {
	if len(c.Targets) == 0 {
		c.Targets = slices.Clone(DefaultTargets)
	}
	if c.R == 0 {
		c.R = DefaultR
	}
	if c.Alpha == 0 {
		c.Alpha = DefaultAlpha
	}
	switch {
	case c.R < 0:
		return c, badinput.Errorf("--lora-r %d: the rank must be positive", c.R)
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return c, badinput.Errorf("--lora-alpha %v: must be a positive number", c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return c, badinput.Errorf("--lora-dropout %v: must be in [0, 1)", c.Dropout)
	}
	for _, t := range c.Targets {
		if _, err := ParseTargets(t); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Scaling is the factor of the LoRA branch: α/r, or α/√r with RSLoRA.
func (c Config) Scaling() float64 {
	if c.RSLoRA {
		return c.Alpha / math.Sqrt(float64(c.R))
	}
	return c.Alpha / float64(c.R)
}

// selectLayers resolves the targets against a model: roles the model lacks
// are bad input naming them and listing the roles it has.
func (c Config) selectLayers(man *modeldir.Manifest) ([]modeldir.Linear, error) {
	has := map[modeldir.Role]bool{}
	for _, l := range man.Linears {
		has[l.Role] = true
	}
	want := map[modeldir.Role]bool{}
	var missing []string
	for _, t := range c.Targets {
		if t == AllLinear {
			for r := range has {
				if r != modeldir.RoleHead {
					want[r] = true
				}
			}
			continue
		}
		r := modeldir.Role(t)
		if !has[r] {
			missing = append(missing, t)
		}
		want[r] = true
	}
	if len(missing) > 0 {
		var roles []string
		for _, r := range modeldir.Roles {
			if has[r] {
				roles = append(roles, string(r))
			}
		}
		return nil, badinput.Errorf("LoRA targets %s: this %s model has no such layers (its roles: %s)",
			strings.Join(missing, ", "), man.Architecture, strings.Join(roles, ", "))
	}
	var out []modeldir.Linear
	for _, l := range man.Linears {
		if want[l.Role] {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, badinput.Errorf("LoRA targets %s select no linear layer of this %s model", strings.Join(c.Targets, ","), man.Architecture)
	}
	return out, nil
}

// String describes the configuration for logs.
func (c Config) String() string {
	targets := strings.Join(c.Targets, ",")
	if targets == "" {
		targets = "(the adapter file's layers)"
	}
	s := fmt.Sprintf("LoRA r=%d α=%g targets=%s", c.R, c.Alpha, targets)
	if c.Dropout > 0 {
		s += fmt.Sprintf(" dropout=%g", c.Dropout)
	}
	if c.RSLoRA {
		s += " rslora"
	}
	return s
}
