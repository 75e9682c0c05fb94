package testfix

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/testenv"
)

// PEFTRun says how PEFTLosses trains: the transformers class of the base
// model, AdamW's learning rate and weight decay, whether the frozen weight
// matrices are rounded to bfloat16 first (as migu export --dtype bf16
// stores them), and whether the adapter must be a DoRA one.
type PEFTRun struct {
	Class  string
	LR, WD float64
	BF16   bool
	DoRA   bool
}

// peftTrain trains an adapter with PEFT: the base model frozen, the
// adapter loaded from a saved initial state, AdamW on its tensors only,
// one step per batch; it prints the losses.
const peftTrain = `
import json, sys
import torch, transformers, peft
spec = json.load(open(sys.argv[1]))
base = getattr(transformers, spec["class"]).from_pretrained(sys.argv[2])
if spec["bf16"]:
    # The arithmetic stays float32; only the stored matrices are rounded.
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() >= 2:
                p.copy_(p.to(torch.bfloat16).float())
model = peft.PeftModel.from_pretrained(base, sys.argv[3], is_trainable=True)
assert model.peft_config["default"].use_dora == spec["dora"]
model.eval()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=spec["wd"])
losses = []
for batch in spec["batches"]:
    feeds = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    feeds["position_ids"] = torch.where(feeds["attention_mask"] == 1, feeds["attention_mask"].cumsum(-1) - 1, torch.arange(feeds["attention_mask"].shape[-1]))
    loss = model(**feeds).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(float(loss))
print(json.dumps(losses))
`

// PEFTLosses trains the PEFT adapter saved in adapterDir on the Hugging
// Face model hf, one AdamW step per batch, and returns PEFT's loss at
// each step: the reference for migu's adapter training.
func PEFTLosses(t testing.TB, hf, adapterDir string, batches []*data.Batch, run PEFTRun) []float64 {
	t.Helper()
	list := make([]map[string][][]int64, len(batches))
	for i, b := range batches {
		list[i] = BatchFeeds(b)
	}
	raw, err := json.Marshal(map[string]any{"class": run.Class, "lr": run.LR, "wd": run.WD, "bf16": run.BF16, "dora": run.DoRA, "batches": list})
	if err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(spec, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	var losses []float64
	if err := json.Unmarshal(testenv.RunPython(t, peftTrain, spec, hf, adapterDir), &losses); err != nil {
		t.Fatal(err)
	}
	if len(losses) != len(batches) {
		t.Fatalf("PEFT gave %d losses for %d batches", len(losses), len(batches))
	}
	return losses
}
