package data

import (
	"math/rand/v2"
	"slices"
)

// Dataset is the records of one data file.
type Dataset struct {
	Path    string // the file, as given
	Kind    Kind
	Records []Record
	// Labels is the label set of classification records; a label's index
	// is its class. LabelSource says where it came from: the path of a
	// labels.json, "option" or "data" (sorted distinct labels).
	Labels      []string
	LabelSource string
	// Skipped counts bad records skipped (ReadOptions.SkipBadLines);
	// FirstSkipped is the error of the first one.
	Skipped      int
	FirstSkipped error
}

// Sample returns n records drawn without replacement, kept in file order,
// the same ones for the same seed; all of them when n is not smaller than
// the dataset (the long CL benchmark trains on 1000 rows per task).
func (d *Dataset) Sample(n int, seed uint64) *Dataset {
	out := *d
	if n < 0 || n >= len(d.Records) {
		out.Records = slices.Clone(d.Records)
		return &out
	}
	rng := rand.New(rand.NewPCG(mix(seed, sampleStream), 0))
	picked := rng.Perm(len(d.Records))[:n]
	slices.Sort(picked)
	out.Records = make([]Record, n)
	for i, j := range picked {
		out.Records[i] = d.Records[j]
	}
	return &out
}
