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
	held, _ := d.Split(n, seed)
	return held
}

// Split draws n records as Sample does (held) and returns the records it
// left too (rest), both in file order, so that a validation split and the
// rows later drawn for training never share a record.
func (d *Dataset) Split(n int, seed uint64) (held, rest *Dataset) {
	h, r := *d, *d
	if n < 0 || n >= len(d.Records) {
		h.Records, r.Records = slices.Clone(d.Records), nil
		return &h, &r
	}
	rng := rand.New(rand.NewPCG(mix(seed, sampleStream), 0))
	taken := make([]bool, len(d.Records))
	for _, j := range rng.Perm(len(d.Records))[:n] {
		taken[j] = true
	}
	h.Records, r.Records = make([]Record, 0, n), make([]Record, 0, len(d.Records)-n)
	for j, rec := range d.Records {
		if taken[j] {
			h.Records = append(h.Records, rec)
		} else {
			r.Records = append(r.Records, rec)
		}
	}
	return &h, &r
}
