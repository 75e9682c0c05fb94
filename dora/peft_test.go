package dora

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/internal/testfix/trainfix"
	"github.com/migu-ml/migu/lora"
	"github.com/migu-ml/migu/modeldir"
)

// peftReference loads our DoRA adapter into the transformers model with
// PEFT (checking that every tensor of our file landed in the model), runs
// one batch with labels and back-propagates, recording the logits, the
// loss and the gradient of every A, B and magnitude; then merges it with
// merge_and_unload and records the merged logits. Then it creates a DoRA
// adapter of its own with get_peft_model, records its initial magnitudes,
// draws B from U(−0.1, 0.1) and scales m by U(0.9, 1.1), saves it with
// save_pretrained and records its logits.
const peftReference = testfix.PyPrelude + `
import peft
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
ckpt, cls, feeds_path, ours, theirs, spec = sys.argv[2:8]
spec = json.loads(spec)
P = "base_model.model."

def ours_name(n):
    n = n[len(P):]
    if ".lora_magnitude_vector." in n:
        return n.replace(".default.weight", "")
    return n.replace(".default.", ".")

model, feeds = load(ckpt, cls, feeds_path)
pm = PeftModel.from_pretrained(model, ours, is_trainable=True).eval()
assert pm.peft_config["default"].use_dora
params = dict(pm.named_parameters())
for k, v in load_file(ours + "/adapter_model.safetensors").items():
    name = k + ".default.weight" if k.endswith("lora_magnitude_vector") else k.replace(".weight", ".default.weight")
    assert torch.equal(params[name], v), k
out = pm(**feeds)
out.loss.backward()
put("logits", out.logits)
grads = []
for n, p in pm.named_parameters():
    if p.grad is not None:
        put("grad/" + ours_name(n), p.grad)
        grads.append(ours_name(n))
feeds.pop("labels")
merged = pm.merge_and_unload()
with torch.no_grad():
    put("merged/logits", merged(**feeds).logits)

torch.manual_seed(1234)
model2, _ = load(ckpt, cls, feeds_path)
cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], use_dora=True, task_type=spec["task"])
pm2 = get_peft_model(model2, cfg).eval()
with torch.no_grad():
    for n, p in pm2.named_parameters():
        if ".lora_magnitude_vector." in n:
            put("init_magnitude/" + ours_name(n), p)
            p.mul_(0.9 + 0.2 * torch.rand_like(p))
        if ".lora_B." in n:
            torch.nn.init.uniform_(p, -0.1, 0.1)
pm2.save_pretrained(theirs)
with torch.no_grad():
    put("theirs/logits", pm2(**feeds).logits)
finish({"loss": float(out.loss), "grads": sorted(grads), "peft": peft.__version__})
`

// peftSpec is the adapter the reference script creates with PEFT itself.
type peftSpec struct {
	R       int      `json:"r"`
	Alpha   float64  `json:"alpha"`
	Targets []string `json:"targets"`
	Task    *string  `json:"task"`
}

// archCase is one architecture of the tests: its transformers class, a
// batch with labels, and the targets on both sides.
type archCase struct {
	arch, class string
	feeds       map[string][][]int64
	targets     []string
	theirs      peftSpec
}

var archCases = []archCase{
	{"llama", "LlamaForCausalLM", testfix.TinyBatch("llama"),
		[]string{"q", "v", "ffn_out"}, peftSpec{4, 8, []string{"q_proj", "v_proj"}, ptr("CAUSAL_LM")}},
	// RoBERTa's linear layers have biases: DoRA scales x·W, not the bias.
	{"roberta", "RobertaForMaskedLM", testfix.TinyBatch("roberta"),
		[]string{lora.AllLinear}, peftSpec{6, 12, []string{"query", "value"}, nil}},
}

func ptr(s string) *string { return &s }

// forwardFeeds drops the labels, which the forward graphs do not take.
func (c archCase) forwardFeeds() map[string][][]int64 { return testfix.WithoutLabels(c.feeds) }

// Our DoRA equals PEFT's use_dora=True on the same checkpoint, both ways:
// PEFT loads the adapter we save and computes our logits, loss and A, B,
// m gradients (the norm detached on both sides) and, merged, our merged
// model's logits; our fresh magnitudes are PEFT's; we load the adapter PEFT
// saves and compute its logits, and save it back unchanged.
func TestMatchesPEFT(t *testing.T) {
	for _, c := range archCases {
		t.Run(c.arch, func(t *testing.T) {
			hf, dir := testfix.TinyModel(t, c.arch)
			man, err := modeldir.ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			a, err := New(lora.Config{Targets: c.targets, R: 4, Alpha: 8})
			if err != nil {
				t.Fatal(err)
			}
			_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 11})
			ours := filepath.Join(t.TempDir(), "ours")
			if err := a.Save(ours, man, perturbed(inj, 11)); err != nil {
				t.Fatal(err)
			}
			theirs := filepath.Join(t.TempDir(), "theirs")
			spec, _ := json.Marshal(c.theirs)
			refDir := t.TempDir()
			testenv.RunPython(t, peftReference, refDir, hf, c.class, testfix.WriteFeeds(t, c.feeds), ours, theirs, string(spec))
			ref := testfix.ReadPyRef(t, refDir)

			loaded, err := adapters.Load(ours)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := loaded.(*Adapter); !ok {
				t.Fatalf("adapters.Load read our DoRA folder as %T", loaded)
			}

			// Logits of the injected forward graph.
			path, _ := injected(t, dir, man, loaded, adapters.InjectOptions{})
			logits := testfix.Run(t, path, c.forwardFeeds(), nil)["logits"]
			base := testfix.Run(t, filepath.Join(dir, modeldir.ModelFile), c.forwardFeeds(), nil)["logits"]
			if moved := testfix.MaxAbsDiff(logits, base); moved < 1e-2 {
				t.Errorf("the adapter moves the logits by %.3g only; the comparison proves little", moved)
			}
			if d := testfix.MaxAbsDiff(logits, ref.Get(t, "logits")); d > 1e-5 {
				t.Errorf("logits: max |Δ| = %.3g against PEFT", d)
			} else {
				t.Logf("logits: max |Δ| = %.3g against PEFT %v", d, ref.Values["peft"])
			}

			// Loss and gradients of the training graph.
			trainPath, tinj, art := trainfix.Graph(t, dir, man, loaded, true)
			got := testfix.Run(t, trainPath, c.feeds, testfix.ParamFloats(tinj.Params))
			testfix.CloseTo(t, "loss", got[art.Loss], []float32{float32(ref.Values["loss"].(float64))}, 1e-5)
			var names []string
			worst := map[string]float64{}
			for _, p := range art.Params {
				names = append(names, p.Name)
				want := ref.Get(t, "grad/"+p.Name)
				if len(p.Shape) == 2 {
					want = transpose(want, p.Shape[1], p.Shape[0])
				}
				kind := p.Name[len(p.Name)-len(magnitudeSuffix):]
				if kind != magnitudeSuffix {
					kind = p.Name[len(p.Name)-len("lora_A.weight"):]
				}
				worst[kind] = math.Max(worst[kind], testfix.CloseTo(t, "gradient of "+p.Name, got[p.Grad], want, 1e-5))
			}
			slices.Sort(names)
			if !slices.Equal(names, anyStrings(ref.Values["grads"])) {
				t.Errorf("we train %v\nPEFT trains %v", names, ref.Values["grads"])
			}
			t.Logf("%d gradients, worst relative |Δ| by kind: %v", len(art.Params), worst)

			// merge_and_unload against migu merge.
			merged := filepath.Join(t.TempDir(), "merged")
			if _, err := adapters.Merge(dir, ours, merged); err != nil {
				t.Fatal(err)
			}
			mergedLogits := testfix.Run(t, filepath.Join(merged, modeldir.ModelFile), c.forwardFeeds(), nil)["logits"]
			if d := testfix.MaxAbsDiff(mergedLogits, ref.Get(t, "merged/logits")); d > 1e-5 {
				t.Errorf("merged logits: max |Δ| = %.3g against PEFT's merge_and_unload", d)
			} else {
				t.Logf("merged logits: max |Δ| = %.3g against PEFT's merge_and_unload", d)
			}

			// The adapter PEFT created: our initial magnitudes are its, and
			// we compute the logits of the one it saved.
			fresh, err := New(lora.Config{Targets: c.targets, R: 4, Alpha: 8})
			if err != nil {
				t.Fatal(err)
			}
			_, finj := injected(t, dir, man, fresh, adapters.InjectOptions{})
			var initChecked int
			for _, p := range finj.Params {
				if _, ok := ref.Arrays["init_magnitude/"+p.Name]; ok {
					testfix.CloseTo(t, "initial "+p.Name, p.Init, ref.Get(t, "init_magnitude/"+p.Name), 1e-6)
					initChecked++
				}
			}
			if initChecked == 0 {
				t.Error("no initial magnitude compared with PEFT's")
			}
			peftAdapter, err := adapters.Load(theirs)
			if err != nil {
				t.Fatal(err)
			}
			path, _ = injected(t, dir, man, peftAdapter, adapters.InjectOptions{})
			if d := testfix.MaxAbsDiff(testfix.Run(t, path, c.forwardFeeds(), nil)["logits"], ref.Get(t, "theirs/logits")); d > 1e-5 {
				t.Errorf("logits with PEFT's adapter: max |Δ| = %.3g", d)
			} else {
				t.Logf("logits with the DoRA adapter PEFT saved: max |Δ| = %.3g (%d initial magnitudes equal PEFT's)", d, initChecked)
			}
			resaved := filepath.Join(t.TempDir(), "resaved")
			if err := peftAdapter.Save(resaved, man, nil); err != nil {
				t.Fatal(err)
			}
			testfix.SameTensors(t, filepath.Join(theirs, adapters.WeightsFile), filepath.Join(resaved, adapters.WeightsFile))
		})
	}
}

// perturbed gives an injection's parameters values that exercise every
// term: A as initialised, B from U(−0.1, 0.1), each magnitude its initial
// ‖W‖ times U(0.9, 1.1).
func perturbed(inj *adapters.Injection, seed uint64) map[string][]float32 {
	rng := rand.New(rand.NewPCG(seed, 5))
	out := map[string][]float32{}
	for _, p := range inj.Params {
		v := slices.Clone(p.Init)
		switch {
		case p.Name == lora.ParamB(p.Name[:len(p.Name)-len(".lora_B.weight")]):
			for i := range v {
				v[i] = float32(0.2*rng.Float64() - 0.1)
			}
		case len(p.Shape) == 1:
			for i := range v {
				v[i] *= float32(0.9 + 0.2*rng.Float64())
			}
		}
		out[p.Name] = v
	}
	return out
}
