package main

import (
	"strconv"

	"github.com/migu-ml/migu/adapters"
	"github.com/spf13/cobra"

	// The adapter kinds the CLI offers: each registers itself, its
	// settings (flags) and its adapter folders with package adapters.
	_ "github.com/migu-ml/migu/dora"
	_ "github.com/migu-ml/migu/lora"
)

// addAdapterFlags adds a flag for every setting of every registered
// adapter kind (--lora-r, …), with o's values as defaults; a flag writes
// its value into o.
func addAdapterFlags(cmd *cobra.Command, o adapters.Options) {
	f := cmd.Flags()
	for _, opt := range adapters.AllOptions() {
		v, ok := o[opt.Name]
		if !ok {
			v = opt.Default
		}
		fl := f.VarPF(&optionValue{o: o, opt: opt, text: v}, opt.Name, "", opt.Help)
		if opt.Type == "bool" {
			fl.NoOptDefVal = "true"
		}
	}
}

// optionValue is one adapter setting as a flag: text stored in the
// options map, checked by the kind when the job starts (bool flags here).
type optionValue struct {
	o    adapters.Options
	opt  adapters.Option
	text string
}

func (v *optionValue) String() string { return v.text }
func (v *optionValue) Type() string   { return v.opt.Type }

func (v *optionValue) Set(s string) error {
	if v.opt.Type == "bool" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		s = strconv.FormatBool(b)
	}
	v.text = s
	v.o[v.opt.Name] = s
	return nil
}
