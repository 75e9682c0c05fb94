package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/safetensors"
)

// Checkpoint files inside checkpoints/step-NNNNNNNN/.
const (
	CheckpointsDir = "checkpoints"
	paramsFile     = "params.safetensors"
	optimFile      = "optim.safetensors"
	stateFile      = "state.json"
)

// CheckpointState is state.json: everything beyond tensors that a resumed
// run needs to continue the same loss curve, and checksums of the tensor
// files so a damaged checkpoint is never loaded.
type CheckpointState struct {
	Format int   `json:"format"`
	Step   int64 `json:"step"`
	// TensorSteps are AdamW's per-tensor step counts.
	TensorSteps map[string]int64 `json:"tensor_steps"`
	// Identity ties the checkpoint to a model and configuration: resuming
	// with another model or other hyperparameters is refused.
	Identity string `json:"identity"`
	// Data is the batch source's position.
	Data json.RawMessage `json:"data,omitempty"`
	// Extra holds the caller's state (e.g. the task of a sequence).
	Extra     json.RawMessage   `json:"extra,omitempty"`
	Checksums map[string]string `json:"checksums"`
}

// SaveCheckpoint writes the trainer's tensors, moments and state under
// runDir/checkpoints/step-NNNNNNNN, atomically: files go to a temporary
// folder that is renamed into place only when complete and synced, so a
// kill at any moment leaves the previous checkpoint intact. It keeps the
// newest keep checkpoints (all when keep ≤ 0) and returns the folder.
func (t *Trainer) SaveCheckpoint(runDir, identity string, dataState, extra json.RawMessage, keep int) (string, error) {
	root := filepath.Join(runDir, CheckpointsDir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	name := fmt.Sprintf("step-%08d", t.Step)
	tmp, err := os.MkdirTemp(root, "."+name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	var params, moments []safetensors.Tensor
	steps := map[string]int64{}
	for _, tt := range t.Tensors {
		params = append(params, safetensors.Tensor{Name: tt.Name, DType: safetensors.F32, Shape: tt.Shape, Values: tt.Value})
		moments = append(moments,
			safetensors.Tensor{Name: "m/" + tt.Name, DType: safetensors.F32, Shape: tt.Shape, Values: tt.M},
			safetensors.Tensor{Name: "v/" + tt.Name, DType: safetensors.F32, Shape: tt.Shape, Values: tt.V})
		steps[tt.Name] = tt.Steps
	}
	if err := safetensors.Write(filepath.Join(tmp, paramsFile), params, nil); err != nil {
		return "", err
	}
	if err := safetensors.Write(filepath.Join(tmp, optimFile), moments, nil); err != nil {
		return "", err
	}
	st := CheckpointState{Format: 1, Step: t.Step, TensorSteps: steps, Identity: identity, Data: dataState, Extra: extra,
		Checksums: map[string]string{}}
	for _, f := range []string{paramsFile, optimFile} {
		sum, err := fileSHA256(filepath.Join(tmp, f))
		if err != nil {
			return "", err
		}
		st.Checksums[f] = sum
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, stateFile), raw); err != nil {
		return "", err
	}
	final := filepath.Join(root, name)
	os.RemoveAll(final) // a checkpoint of the same step from an interrupted earlier attempt
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	if d, err := os.Open(root); err == nil {
		d.Sync()
		d.Close()
	}
	if keep > 0 {
		all, _ := listCheckpoints(runDir)
		for i := keep; i < len(all); i++ {
			os.RemoveAll(all[i])
		}
	}
	return final, nil
}

// listCheckpoints returns the finished checkpoint folders, newest first.
func listCheckpoints(runDir string) ([]string, error) {
	root := filepath.Join(runDir, CheckpointsDir)
	entries, err := os.ReadDir(root)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "step-") {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, nil
}

// LatestCheckpoint finds the newest checkpoint whose state parses and whose
// files match their checksums, skipping (and naming) damaged ones.
func LatestCheckpoint(runDir string) (string, *CheckpointState, []string, error) {
	all, err := listCheckpoints(runDir)
	if err != nil {
		return "", nil, nil, err
	}
	var skipped []string
	for _, dir := range all {
		st, err := readCheckpointState(dir)
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		return dir, st, skipped, nil
	}
	return "", nil, skipped, nil
}

func readCheckpointState(dir string) (*CheckpointState, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	var st CheckpointState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("%s: %s: %v", dir, stateFile, err)
	}
	for _, f := range []string{paramsFile, optimFile} {
		sum, err := fileSHA256(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", dir, err)
		}
		if sum != st.Checksums[f] {
			return nil, fmt.Errorf("%s: %s does not match its checksum", dir, f)
		}
	}
	return &st, nil
}

// CheckIdentity refuses a checkpoint (in dir) of another model or
// configuration than identity's.
func (st *CheckpointState) CheckIdentity(dir, identity string) error {
	if st.Identity != identity {
		return badinput.Errorf("%s was written for another model or configuration (identity %.12s…, this run %.12s…); use a new %v or the original settings", dir, st.Identity, identity, badinput.Setting("out"))
	}
	return nil
}

// LoadCheckpoint restores tensors, moments and step counts. The checkpoint
// must come from the same model and configuration (identity) and hold
// exactly the trainer's tensors with their shapes.
func (t *Trainer) LoadCheckpoint(dir string, st *CheckpointState, identity string) error {
	if err := st.CheckIdentity(dir, identity); err != nil {
		return err
	}
	params, err := safetensors.Open(filepath.Join(dir, paramsFile))
	if err != nil {
		return err
	}
	defer params.Close()
	moments, err := safetensors.Open(filepath.Join(dir, optimFile))
	if err != nil {
		return err
	}
	defer moments.Close()
	for _, tt := range t.Tensors {
		for _, part := range []struct {
			f    *safetensors.File
			name string
			dst  []float32
		}{{params, tt.Name, tt.Value}, {moments, "m/" + tt.Name, tt.M}, {moments, "v/" + tt.Name, tt.V}} {
			info, err := part.f.Info(part.name)
			if err != nil {
				return badinput.Errorf("%s: %v", dir, err)
			}
			if !slices.Equal(info.Shape, tt.Shape) {
				return badinput.Errorf("%s: tensor %s has shape %v, the model's is %v", dir, part.name, info.Shape, tt.Shape)
			}
			if err := part.f.ReadInto(part.name, part.dst); err != nil {
				return err
			}
		}
		tt.Steps = st.TensorSteps[tt.Name]
	}
	t.Step = st.Step
	t.bf16Stale = true
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
