package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/migu"
)

// authorsMasks runs a stock transformers Llama forward on a batch as the
// MIGU authors' code does — no position_ids, so transformers numbers every
// position of a row 0 … S−1, padding included — and writes, per
// nn.Linear, Σ|y| over every token (forward hooks) and the mask
// n ≥ torch.quantile(n, T).
const authorsMasks = `
import json, sys
import torch, transformers
ckpt, feeds_path, t, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
model = transformers.LlamaForCausalLM.from_pretrained(ckpt).eval()
feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in json.load(open(feeds_path)).items()}
mags = {}
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear):
        def hook(mod, inp, outp, name=name):
            mags[name] = outp.detach().abs().reshape(-1, outp.shape[-1]).sum(0)
        mod.register_forward_hook(hook)
with torch.no_grad():
    model(input_ids=feeds["input_ids"], attention_mask=feeds["attention_mask"])
res = {name: {"mags": n.tolist(), "keep": (n >= torch.quantile(n, t)).tolist()} for name, n in mags.items()}
json.dump(res, open(out, "w"))
`

// On a right-padded batch the default (padding-inclusive) magnitude taps
// of a migu-exported Llama equal, to float32 rounding, those of the
// authors' setup — stock transformers on the same weights and batch,
// padding counted — and MIGU's masks at T = 0.7 agree bit for bit. With
// padding numbered cumsum(mask) − 1 instead (migu before this test) the
// padding rows' rotary positions differed and so did the taps and masks.
func TestTapMasksMatchPyTorchRightPadded(t *testing.T) {
	const T = 0.7
	root := t.TempDir()
	hf, model := filepath.Join(root, "hf"), filepath.Join(root, "model")
	if _, err := exporters.Init(hf, exporters.InitOptions{Arch: "llama", Preset: "tiny", VocabSize: 600}); err != nil {
		t.Fatal(err)
	}
	man := exportWith(t, "go", hf, model)
	// Rows of 9, 6, 3 and 1 tokens padded on the right to 9.
	var ids, mask, labels [][]int64
	for r, n := range []int{9, 6, 3, 1} {
		row, m, l := make([]int64, 9), make([]int64, 9), make([]int64, 9)
		for s := range row {
			l[s] = -100
			if s < n {
				row[s], m[s] = int64(3+(r*37+s*53)%590), 1
				l[s] = row[s]
			}
		}
		ids, mask, labels = append(ids, row), append(mask, m), append(labels, l)
	}
	feeds := map[string][][]int64{"input_ids": ids, "attention_mask": mask, "labels": labels}

	dir := t.TempDir()
	feedsPath, outPath := filepath.Join(dir, "feeds.json"), filepath.Join(dir, "ref.json")
	raw, _ := json.Marshal(feeds)
	if err := os.WriteFile(feedsPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunPython(t, authorsMasks, hf, feedsPath, "0.7", outPath)
	raw, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var ref map[string]struct {
		Mags []float32 `json:"mags"`
		Keep []bool    `json:"keep"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}

	art, got := runTrain(t, model, feeds, GraphOptions{Trainable: TrainLinear, Taps: true})
	if len(art.Taps) != len(man.Linears) {
		t.Errorf("%d taps for %d linears", len(art.Taps), len(man.Linears))
	}
	bits, flips, worst := 0, 0, 0.0
	for _, tap := range art.Taps {
		want, ok := ref[tap.Name]
		if !ok {
			t.Errorf("no PyTorch hook recorded %s", tap.Name)
			continue
		}
		n := got[tap.Output]
		closeTo(t, "magnitude "+tap.Name, n, want.Mags, 1e-5)
		if len(n) != len(want.Mags) {
			continue
		}
		for j := range n {
			worst = math.Max(worst, math.Abs(float64(n[j]-want.Mags[j]))/math.Abs(float64(want.Mags[j])))
		}
		keep := make([]bool, len(n))
		if _, err := migu.Mask(n, T, keep); err != nil {
			t.Fatal(err)
		}
		for j := range keep {
			if keep[j] != want.Keep[j] {
				flips++
			}
		}
		bits += len(keep)
	}
	t.Logf("%d taps, %d mask bits at T = %g: %d flipped; max relative tap difference %.3g", len(art.Taps), bits, T, flips, worst)
	if flips != 0 || worst > 1e-5 {
		t.Errorf("%d of %d mask bits differ from the authors' setup, magnitudes by up to %.3g (relative)", flips, bits, worst)
	}
}
