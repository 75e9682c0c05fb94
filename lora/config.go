package lora

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/migu-ml/migu/adapters"
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
	// R is the rank: at least 1 and at most the width (the smaller of
	// d_in and d_out) of the narrowest adapted layer, where the update
	// A·B already has full rank.
	R int
	// Alpha is the scaling numerator, a finite number > 0.
	Alpha float64
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
				return nil, badinput.Errorf("%v: unknown target %q (roles q, k, v, o, ffn_in, ffn_gate, ffn_out, head, or all)", badinput.Setting(OptionTargets), part)
			}
		}
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	if len(out) == 0 {
		return nil, badinput.Errorf("%v is empty (give roles such as q,v, or all)", badinput.Setting(OptionTargets))
	}
	return out, nil
}

// DefaultConfig is the configuration `migu train --method lora` starts
// from: r 8, alpha 32, the q and v projections, no dropout.
func DefaultConfig() Config {
	return Config{Targets: slices.Clone(DefaultTargets), R: DefaultR, Alpha: DefaultAlpha}
}

// withDefaults fills empty targets with DefaultTargets and checks the
// ranges; a zero rank or alpha is an error, not a default.
func (c Config) withDefaults() (Config, error) {
	if len(c.Targets) == 0 {
		c.Targets = slices.Clone(DefaultTargets)
	}
	return c, c.Check()
}

// Check checks the ranges that do not depend on the model: r ≥ 1, alpha
// finite and > 0, dropout in [0, 1), and the targets' names. CheckFor
// adds the model's bound on r.
func (c Config) Check() error {
	switch {
	case c.R < 1:
		return badinput.Range(OptionR, c.R, "1 … the width of the narrowest adapted layer")
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return badinput.Range(OptionAlpha, c.Alpha, "a finite number > 0")
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return badinput.Range(OptionDropout, c.Dropout, "[0, 1)")
	}
	for _, t := range c.Targets {
		if _, err := ParseTargets(t); err != nil {
			return err
		}
	}
	return nil
}

// CheckFor checks c as Check does and against a model: the targets must
// select layers of it and r must not exceed the narrowest one's width.
// It needs only the manifest, so a run can refuse before writing.
func (c Config) CheckFor(man *modeldir.Manifest) error {
	if len(c.Targets) == 0 {
		c.Targets = DefaultTargets
	}
	if err := c.Check(); err != nil {
		return err
	}
	_, err := c.layersFor(man)
	return err
}

// layersFor selects the adapted layers of man and checks r against their
// widths.
func (c Config) layersFor(man *modeldir.Manifest) ([]modeldir.Linear, error) {
	layers, err := c.selectLayers(man)
	if err != nil {
		return nil, err
	}
	narrow := layers[0]
	for _, l := range layers[1:] {
		if min(l.DIn, l.DOut) < min(narrow.DIn, narrow.DOut) {
			narrow = l
		}
	}
	if width := min(narrow.DIn, narrow.DOut); int64(c.R) > width {
		return nil, badinput.Errorf("%v %d is outside its range: 1 … %d, the width of the narrowest adapted layer (%s, %d→%d)",
			badinput.Setting(OptionR), c.R, width, narrow.Name, narrow.DIn, narrow.DOut)
	}
	return layers, nil
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

// Option names of LoRA's settings, which are also their flags.
const (
	OptionR       = "lora-r"
	OptionAlpha   = "lora-alpha"
	OptionDropout = "lora-dropout"
	OptionTargets = "lora-targets"
)

// Options declares LoRA's settings with DefaultConfig's values; DoRA
// declares the same ones.
func Options() []adapters.Option {
	d := DefaultConfig()
	return []adapters.Option{
		{Name: OptionR, Type: "int", Default: strconv.Itoa(d.R), Help: "rank of LoRA and DoRA: 1 … the width of the narrowest adapted layer"},
		{Name: OptionAlpha, Type: "float64", Default: strconv.FormatFloat(d.Alpha, 'g', -1, 64), Help: "LoRA alpha, > 0 (scaling alpha/r)"},
		{Name: OptionDropout, Type: "float64", Default: strconv.FormatFloat(d.Dropout, 'g', -1, 64), Help: "LoRA dropout probability in [0, 1)"},
		{Name: OptionTargets, Type: "string", Default: strings.Join(d.Targets, ","), Help: "roles LoRA adapts: q,k,v,o,ffn_in,ffn_gate,ffn_out,head, or all"},
	}
}

// ConfigFrom reads a configuration from settings named as Options names
// them; a missing setting takes its default, a malformed one is bad input
// naming the setting.
func ConfigFrom(o adapters.Options) (Config, error) {
	c := DefaultConfig()
	if v, ok := o[OptionR]; ok {
		r, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return Config{}, badinput.Errorf("%v %q is not an integer", badinput.Setting(OptionR), v)
		}
		c.R = r
	}
	if err := parseFloat(o, OptionAlpha, &c.Alpha); err != nil {
		return Config{}, err
	}
	if err := parseFloat(o, OptionDropout, &c.Dropout); err != nil {
		return Config{}, err
	}
	if v, ok := o[OptionTargets]; ok {
		t, err := ParseTargets(v)
		if err != nil {
			return Config{}, err
		}
		c.Targets = t
	}
	return c, nil
}

// parseFloat sets *dst to the number o gives setting s, if it gives one.
func parseFloat(o adapters.Options, s badinput.Setting, dst *float64) error {
	v, ok := o[string(s)]
	if !ok {
		return nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return badinput.Errorf("%v %q is not a number", s, v)
	}
	*dst = f
	return nil
}

// Settings are c as settings (Options' names), for jobs built in code.
// Empty targets are left out, so they take the default.
func (c Config) Settings() adapters.Options {
	o := adapters.Options{
		OptionR:       strconv.Itoa(c.R),
		OptionAlpha:   strconv.FormatFloat(c.Alpha, 'g', -1, 64),
		OptionDropout: strconv.FormatFloat(c.Dropout, 'g', -1, 64),
	}
	if len(c.Targets) > 0 {
		o[OptionTargets] = strings.Join(c.Targets, ",")
	}
	return o
}
