package train

import (
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/modeldir"
)

// Widening is off with a negative Extra, on for every block with room,
// and stops at MaxBytes of padded weight copies. (Its results equal
// PyTorch's: TestTrainGraphMatchesPyTorch runs with every block widened.)
func TestHiddenPadBlocks(t *testing.T) {
	root := t.TempDir()
	hf, model := filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	man, err := exporters.Export(hf, model)
	if err != nil {
		t.Fatal(err)
	}
	blocks, blockBytes := 0, int64(0)
	for _, l := range man.Linears {
		switch l.Role {
		case modeldir.RoleFFNOut:
			blocks++
			blockBytes += 4 * (l.DIn + 16) * l.DOut
		case modeldir.RoleFFNIn, modeldir.RoleFFNGate:
			blockBytes += 4 * l.DIn * (l.DOut + 16)
		}
	}
	blockBytes /= int64(blocks)
	cases := []struct {
		name string
		pad  HiddenPad
		want int
	}{
		{"off", HiddenPad{Extra: -1}, 0},
		{"zero value: off", HiddenPad{}, 0},
		{"4 KB rule: tiny widths are no multiple of 4 KB", PadFourKB, 0},
		{"every block", forcedPad, blocks},
		{"capped at one block", HiddenPad{Multiple: 4, Extra: 16, MaxBytes: blockBytes}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			art, err := BuildGraph(model, t.TempDir(), GraphOptions{Trainable: TrainLinear, HiddenPad: c.pad})
			if err != nil {
				t.Fatal(err)
			}
			if art.PaddedHidden != c.want {
				t.Errorf("%d blocks widened, want %d", art.PaddedHidden, c.want)
			}
		})
	}
}
