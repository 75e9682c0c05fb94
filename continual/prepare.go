package continual

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
)

// taskData is a checked task: its rows and label set.
type taskData struct {
	Task
	train, test *data.Dataset
	// val is the validation split held out of the training file
	// (Sequence.ValSamples); nil without one.
	val    *data.Dataset
	labels []string
}

// Check reads every task's files before any training: an unknown or
// missing file, an empty task, a file that is not classification data or
// a bad record is bad input naming the task. Test labels that the training
// rows lack come back as warnings with a count.
func Check(seq *Sequence) (warnings []string, err error) {
	_, warnings, err = load(seq)
	return warnings, err
}

// load reads and checks every task of seq.
func load(seq *Sequence) ([]taskData, []string, error) {
	if len(seq.Tasks) == 0 {
		return nil, nil, badinput.Errorf("sequence %q has no tasks", seq.Name)
	}
	var warnings []string
	out := make([]taskData, 0, len(seq.Tasks))
	seen := map[string]bool{}
	for _, t := range seq.Tasks {
		if t.Name == "" {
			return nil, nil, badinput.Errorf("sequence %q: a task has no name", seq.Name)
		}
		if seen[t.Name] {
			return nil, nil, badinput.Errorf("%s appears twice in the sequence", t.where(seq))
		}
		seen[t.Name] = true
		for _, f := range []string{t.Train, t.Test, t.Labels} {
			if f == "" {
				continue
			}
			if st, err := os.Stat(f); err != nil {
				return nil, nil, badinput.Errorf("%s: data file %s does not exist", t.where(seq), f)
			} else if st.IsDir() {
				return nil, nil, badinput.Errorf("%s: %s is a folder, not a data file", t.where(seq), f)
			}
		}
		if t.Train == "" || t.Test == "" {
			return nil, nil, badinput.Errorf("%s: needs both a train and a test file", t.where(seq))
		}
		var labels []string
		if t.Labels != "" {
			raw, err := os.ReadFile(t.Labels)
			if err != nil {
				return nil, nil, badinput.Wrap(err)
			}
			if err := json.Unmarshal(raw, &labels); err != nil || len(labels) == 0 {
				return nil, nil, badinput.Errorf("%s: %s is not a non-empty JSON array of label strings", t.where(seq), t.Labels)
			}
		}
		train, err := readTask(seq, t, t.Train, labels)
		if err != nil {
			return nil, nil, err
		}
		test, err := readTask(seq, t, t.Test, nil)
		if err != nil {
			return nil, nil, err
		}
		inTrain := map[string]bool{}
		for _, r := range train.Records {
			inTrain[r.Label] = true
		}
		missing, kinds := 0, map[string]bool{}
		for _, r := range test.Records {
			if !inTrain[r.Label] {
				missing++
				kinds[r.Label] = true
			}
		}
		if missing > 0 {
			warnings = append(warnings, fmt.Sprintf("task %s: %d of %d test rows have a label the training rows lack (%d label(s), e.g. %q); they count as wrong",
				t.Name, missing, len(test.Records), len(kinds), anyKey(kinds)))
		}
		td := taskData{Task: t, train: train, test: test, labels: train.Labels}
		if seq.ValSamples > 0 {
			if len(train.Records) <= seq.ValSamples {
				return nil, nil, badinput.Errorf("%s: %s has %d rows; holding out %d for validation leaves none to train on", t.where(seq), t.Train, len(train.Records), seq.ValSamples)
			}
			td.val, td.train = train.Split(seq.ValSamples, seq.SampleSeed)
		}
		out = append(out, td)
	}
	return out, warnings, nil
}

// readTask reads one classification file of a task.
func readTask(seq *Sequence, t Task, path string, labels []string) (*data.Dataset, error) {
	ds, err := data.Read(path, data.ReadOptions{Kind: data.Classification, Labels: labels, MaxLineBytes: seq.MaxLineBytes})
	if err != nil {
		return nil, badinput.Errorf("%s: %v", t.where(seq), err)
	}
	if len(ds.Records) == 0 {
		return nil, badinput.Errorf("%s: %s has no rows", t.where(seq), path)
	}
	return ds, nil
}

func anyKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// samples resolves a task's row count against the sequence's (negative or
// 0: all).
func samples(task, seq int) int {
	switch {
	case task < 0:
		return -1
	case task > 0:
		return task
	case seq > 0:
		return seq
	}
	return -1
}

// promptDirs are the two folders above a data file, which data.CLPromptFor
// reads as task type and dataset; a copy of the file in the same pair of
// folders gets the same prompt.
func promptDirs(path string) (string, string) {
	dir := filepath.Dir(filepath.Clean(path))
	ds := filepath.Base(dir)
	typ := filepath.Base(filepath.Dir(dir))
	clean := func(s string) string {
		if s == "." || s == string(filepath.Separator) || s == "" {
			return "_"
		}
		return s
	}
	return clean(typ), clean(ds)
}

// writeRows writes rows as a JSON array of {"sentence","label"} with
// labels.json beside it, into root/TYPE/DATASET/name where TYPE/DATASET
// are the original file's folders (so the prompt is the same). It returns
// the path; an existing file is kept (the rows are deterministic).
func writeRows(root, orig, name string, ds *data.Dataset, labels []string) (string, error) {
	typ, dsName := promptDirs(orig)
	dir := filepath.Join(root, typ, dsName)
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	type row struct {
		Sentence string `json:"sentence"`
		Label    string `json:"label"`
	}
	rows := make([]row, len(ds.Records))
	for i, r := range ds.Records {
		rows[i] = row{r.Sentence, r.Label}
	}
	raw, err := json.MarshalIndent(rows, "", " ")
	if err != nil {
		return "", err
	}
	lab, err := json.Marshal(labels)
	if err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, data.LabelsFile), lab); err != nil {
		return "", err
	}
	return path, atomicfile.WriteFile(path, raw)
}
