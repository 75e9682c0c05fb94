package lora

import (
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix/trainfix"
	"github.com/migu-ml/migu/modeldir"
)

// peftReference loads our adapter into the transformers model with PEFT
// (checking that every tensor of our file landed in the model), runs one
// batch with labels and back-propagates, recording the logits, the loss,
// the gradient of every LoRA matrix and, through forward hooks, Σ|·| per
// feature of each LoRA layer's output and of its lora_A output. Then it
// creates an adapter of its own with get_peft_model, records the Kaiming
// bound of its lora_A initialisation, draws every lora_B from U(−0.1, 0.1), saves it
// with save_pretrained and records its logits.
const peftReference = pyPrelude + `
import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
ckpt, cls, feeds_path, ours, theirs, spec = sys.argv[2:8]
spec = json.loads(spec)
P = "base_model.model."

def ours_name(param):
    return param[len(P):].replace(".default.", ".")

model, feeds = load(ckpt, cls, feeds_path)
pm = PeftModel.from_pretrained(model, ours, is_trainable=True).eval()
params = dict(pm.named_parameters())
for k, v in load_file(ours + "/adapter_model.safetensors").items():
    name = k.replace(".weight", ".default.weight")
    assert torch.equal(params[name], v), k
adapted = sorted(n[len(P):] for n, m in pm.named_modules() if isinstance(m, LoraLayer))
mags = {}
def hook(name):
    def f(mod, inp, outp):
        mags[name] = outp.detach().abs().reshape(-1, outp.shape[-1]).sum(0)
    return f
for n, m in pm.named_modules():
    if isinstance(m, LoraLayer):
        m.register_forward_hook(hook(n[len(P):]))
        m.lora_A["default"].register_forward_hook(hook(n[len(P):] + ".lora_A"))
out = pm(**feeds)
out.loss.backward()
put("logits", out.logits)
for n, p in pm.named_parameters():
    if p.grad is not None:
        put("grad/" + ours_name(n), p.grad)
for n, v in mags.items():
    put("magnitude/" + n, v)

torch.manual_seed(1234)
model2, feeds = load(ckpt, cls, feeds_path)
cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], use_rslora=spec["rslora"], task_type=spec["task"])
pm2 = get_peft_model(model2, cfg).eval()
bounds = {}
for n, p in pm2.named_parameters():
    if ".lora_A." in n:
        fan_in = p.shape[1]
        gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        b = bounds.setdefault(str(fan_in), {"bound": math.sqrt(3.0) * gain / math.sqrt(fan_in), "max_abs": 0.0})
        b["max_abs"] = max(b["max_abs"], float(p.detach().abs().max()))
    if ".lora_B." in n:
        assert float(p.detach().abs().max()) == 0.0, n
        torch.nn.init.uniform_(p, -0.1, 0.1)
pm2.save_pretrained(theirs)
feeds.pop("labels")
with torch.no_grad():
    put("theirs/logits", pm2(**feeds).logits)
theirs_adapted = sorted(n[len(P):] for n, m in pm2.named_modules() if isinstance(m, LoraLayer))
finish({"adapted": adapted, "theirs_adapted": theirs_adapted, "loss": float(out.loss), "bounds": bounds, "peft": peft.__version__})
`

// peftSpec is the adapter the reference script creates with PEFT itself.
type peftSpec struct {
	R       int      `json:"r"`
	Alpha   float64  `json:"alpha"`
	Targets []string `json:"targets"`
	RSLoRA  bool     `json:"rslora"`
	Task    *string  `json:"task"`
}

// Our LoRA equals PEFT's on the same checkpoint, both ways: PEFT loads the
// adapter we save and computes our logits, loss, A/B gradients and MIGU
// magnitudes; we load the adapter PEFT saves, with identical values, and
// compute its logits.
func TestMatchesPEFT(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		arch    string
		targets []string
		r       int
		theirs  peftSpec
	}{
		{"llama", []string{"q", "v"}, 8, peftSpec{4, 8, []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, false, str("CAUSAL_LM")}},
		{"t5", []string{"q", "v"}, 8, peftSpec{4, 8, []string{"q", "k", "v", "o", "wi_0", "wi_1", "wo"}, true, str("SEQ_2_SEQ_LM")}},
		{"roberta", []string{AllLinear}, 4, peftSpec{6, 12, []string{"query", "value"}, false, nil}},
	}
	for _, c := range cases {
		t.Run(c.arch, func(t *testing.T) {
			t.Parallel()
			ac := archCases[c.arch]
			hf, dir, man := model(t, c.arch)
			a, err := New(defaulted(Config{Targets: c.targets, R: c.r}))
			if err != nil {
				t.Fatal(err)
			}
			_, inj := injected(t, dir, man, a, adapters.InjectOptions{Seed: 11})
			ours := filepath.Join(t.TempDir(), "ours")
			if err := a.Save(ours, man, randomValues(inj, 11)); err != nil {
				t.Fatal(err)
			}
			theirs := filepath.Join(t.TempDir(), "theirs")
			spec, _ := json.Marshal(c.theirs)
			refDir := t.TempDir()
			testenv.RunPython(t, peftReference, refDir, hf, ac.class, writeFeeds(t, ac.feeds), ours, theirs, string(spec))
			ref := readPyRef(t, refDir)

			loaded, err := Load(ours)
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := loaded.Layers(man)
			var names []string
			for _, l := range layers {
				names = append(names, l.Name)
			}
			slices.Sort(names)
			if got := strings.Join(names, " "); got != joinAny(ref.Values["adapted"]) {
				t.Errorf("PEFT adapted %s\nwe adapted %s", joinAny(ref.Values["adapted"]), got)
			}

			// Logits of the injected forward graph.
			path, _ := injected(t, dir, man, loaded, adapters.InjectOptions{})
			logits := run(t, path, ac.forwardFeeds(), nil)["logits"]
			if moved := maxAbsDiff(logits, run(t, filepath.Join(dir, modeldir.ModelFile), ac.forwardFeeds(), nil)["logits"]); moved < 1e-2 {
				t.Errorf("the adapter moves the logits by %.3g only; the comparison proves little", moved)
			}
			if d := maxAbsDiff(logits, ref.Get(t, "logits")); d > 1e-5 {
				t.Errorf("logits: max |Δ| = %.3g against PEFT", d)
			} else {
				t.Logf("logits: max |Δ| = %.3g against PEFT %v (%d adapted layers)", d, ref.Values["peft"], len(layers))
			}

			// Loss, gradients and taps of the training graph.
			trainPath, tinj, art := trainfix.Graph(t, dir, man, loaded, true)
			floats := map[string]adapters.Param{}
			for _, p := range tinj.Params {
				floats[p.Name] = p
			}
			got := run(t, trainPath, ac.feeds, floats)
			closeTo(t, "loss", got[art.Loss], []float32{float32(ref.Values["loss"].(float64))}, 1e-5)
			var worst float64
			for _, p := range art.Params {
				want := ref.Get(t, "grad/"+p.Name)
				worst = math.Max(worst, closeTo(t, "gradient of "+p.Name, got[p.Grad], transpose(want, p.Shape[1], p.Shape[0]), 1e-5))
			}
			for _, tap := range art.Taps {
				worst = math.Max(worst, closeTo(t, "magnitude "+tap.Name, got[tap.Output], ref.Get(t, "magnitude/"+tap.Name), 1e-5))
			}
			t.Logf("%d gradients and %d magnitudes: worst relative |Δ| %.3g", len(art.Params), len(art.Taps), worst)

			// The adapter PEFT saved.
			peftAdapter, err := Load(theirs)
			if err != nil {
				t.Fatal(err)
			}
			layers, err = peftAdapter.Layers(man)
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != len(ref.Values["theirs_adapted"].([]any)) {
				t.Errorf("PEFT's adapter has %d layers, we read %d", len(ref.Values["theirs_adapted"].([]any)), len(layers))
			}
			path, _ = injected(t, dir, man, peftAdapter, adapters.InjectOptions{})
			if d := maxAbsDiff(run(t, path, ac.forwardFeeds(), nil)["logits"], ref.Get(t, "theirs/logits")); d > 1e-5 {
				t.Errorf("logits with PEFT's adapter: max |Δ| = %.3g", d)
			} else {
				t.Logf("logits with the adapter PEFT saved (r=%d, rslora %v): max |Δ| = %.3g", c.theirs.R, c.theirs.RSLoRA, d)
			}
			resaved := filepath.Join(t.TempDir(), "resaved")
			if err := peftAdapter.Save(resaved, man, nil); err != nil {
				t.Fatal(err)
			}
			sameTensors(t, filepath.Join(theirs, adapters.WeightsFile), filepath.Join(resaved, adapters.WeightsFile))

			// PEFT's Kaiming bound for lora_A equals ours, and bounds its values.
			for dIn, b := range ref.Values["bounds"].(map[string]any) {
				b := b.(map[string]any)
				var n int64
				json.Unmarshal([]byte(dIn), &n)
				if KaimingBound(n) != b["bound"].(float64) || b["max_abs"].(float64) > b["bound"].(float64) {
					t.Errorf("d_in %d: our bound %v, PEFT's %v, PEFT's max |A| %v", n, KaimingBound(n), b["bound"], b["max_abs"])
				}
			}
		})
	}
}

func joinAny(v any) string {
	var s []string
	for _, x := range v.([]any) {
		s = append(s, x.(string))
	}
	return strings.Join(s, " ")
}
