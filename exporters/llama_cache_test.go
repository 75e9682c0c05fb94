package exporters

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/onnx/ort"
)

// cacheScript runs two steps of a transformers Llama with its own cache:
// a left-padded prompt batch, then one new token per row fed with
// past_key_values. It writes the last position's logits of both steps and
// the keys and values after the second step.
const cacheScript = `
import json, sys
import numpy as np, torch, transformers
spec = json.load(open(sys.argv[1]))
model = transformers.AutoModelForCausalLM.from_pretrained(spec["hf"]).eval()
def pos(mask):
    # migu's positions: a real token counts the real tokens before it,
    # padding keeps its index.
    return torch.where(mask == 1, mask.cumsum(-1) - 1, torch.arange(mask.shape[-1]))
ids = torch.tensor(spec["ids"]); mask = torch.tensor(spec["mask"])
out = {}
with torch.no_grad():
    r = model(input_ids=ids, attention_mask=mask, position_ids=pos(mask), use_cache=True)
    out["logits0"] = r.logits[:, -1].flatten().tolist()
    nxt = torch.tensor(spec["next"]); mask2 = torch.cat([mask, torch.ones_like(nxt)], 1)
    r2 = model(input_ids=nxt, attention_mask=mask2, position_ids=pos(mask2)[:, -nxt.shape[1]:],
               past_key_values=r.past_key_values, use_cache=True)
    out["logits1"] = r2.logits[:, -1].flatten().tolist()
    pkv = r2.past_key_values
    if hasattr(pkv, "to_legacy_cache"):
        pkv = pkv.to_legacy_cache()
    out["keys"] = [k.flatten().tolist() for k, v in pkv]
    out["values"] = [v.flatten().tolist() for k, v in pkv]
json.dump(out, open(sys.argv[2], "w"))
`

// TestDecoderWithPastParity builds the cached decoder of a tiny Llama
// folder and checks both steps (prompt with an empty cache, then one token
// with the cache) against transformers' past_key_values within 1e-4.
func TestDecoderWithPastParity(t *testing.T) {
	lib := testenv.ORTLib(t)
	hf, dir := tinyFolder(t, "llama")
	graphs, err := kvcache.Build(dir, "llama")
	if err != nil {
		t.Fatal(err)
	}
	model, cache := graphs.Decoder, graphs.Cache
	raw, err := proto.Marshal(model.Proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(ort.InitOptions{LibraryPath: lib}); err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: 1, ExternalDataDir: model.Dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	// Row 0 has 6 tokens, row 1 is left-padded to 6 from 3.
	ids := [][]int64{{5, 17, 40, 300, 12, 99}, {0, 0, 0, 250, 8, 77}}
	mask := [][]int64{{1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 1, 1}}
	next := [][]int64{{31}, {420}}
	const batch, seq = 2, 6
	kvShape := func(n int) []int64 { return []int64{batch, int64(cache.KVHeads), int64(n), int64(cache.HeadDim)} }
	flat := func(rows [][]int64) []int64 {
		var out []int64
		for _, r := range rows {
			out = append(out, r...)
		}
		return out
	}
	step := func(ids, mask []int64, newLen, total int, past []ort.Value) (logits []float32, present []ort.Value) {
		t.Helper()
		in := map[string]ort.Value{}
		idT, err := ort.NewTensor(ids, batch, int64(newLen))
		if err != nil {
			t.Fatal(err)
		}
		maskT, err := ort.NewTensor(mask, batch, int64(total))
		if err != nil {
			t.Fatal(err)
		}
		one, err := ort.NewTensor([]int64{1}, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer idT.Close()
		defer maskT.Close()
		defer one.Close()
		in["input_ids"], in["attention_mask"], in[kvcache.LogitsLen] = idT, maskT, one
		for i := range cache.Layers {
			in[cache.PastKey[i]], in[cache.PastValue[i]] = past[2*i], past[2*i+1]
		}
		outs, err := sess.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]ort.Value{}
		for k, info := range sess.Outputs() {
			byName[info.Name] = outs[k]
		}
		l := byName["logits"].(*ort.Tensor[float32])
		logits = append([]float32(nil), l.Data()...)
		l.Close()
		for i := range cache.Layers {
			present = append(present, byName[cache.PresentKey[i]], byName[cache.PresentValue[i]])
		}
		return logits, present
	}
	var empty []ort.Value
	for range 2 * cache.Layers {
		z, err := ort.Zeros[float32](kvShape(0)...)
		if err != nil {
			t.Fatal(err)
		}
		defer z.Close()
		empty = append(empty, z)
	}
	logits0, present := step(flat(ids), flat(mask), seq, seq, empty)
	for _, v := range present {
		defer v.Close()
	}
	mask2 := [][]int64{append(append([]int64{}, mask[0]...), 1), append(append([]int64{}, mask[1]...), 1)}
	logits1, present2 := step(flat(next), flat(mask2), 1, seq+1, present)
	for _, v := range present2 {
		defer v.Close()
	}

	spec, _ := json.Marshal(map[string]any{"hf": hf, "ids": ids, "mask": mask, "next": next})
	specPath, outPath := filepath.Join(t.TempDir(), "spec.json"), filepath.Join(t.TempDir(), "ref.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunPython(t, cacheScript, specPath, outPath)
	var ref struct {
		Logits0, Logits1 []float32
		Keys, Values     [][]float32
	}
	b, err := os.ReadFile(outPath)
	if err != nil || json.Unmarshal(b, &ref) != nil {
		t.Fatalf("reading the reference: %v", err)
	}
	near := func(what string, got, want []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, reference %d", what, len(got), len(want))
		}
		worst := 0.0
		for i := range got {
			worst = max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > 1e-4 || math.IsNaN(worst) {
			t.Errorf("%s: max |Δ| = %.3g > 1e-4", what, worst)
		}
		t.Logf("%s: max |Δ| = %.3g over %d values", what, worst, len(got))
	}
	near("prompt step logits", logits0, ref.Logits0)
	near("cached step logits", logits1, ref.Logits1)
	// Keys and values of padding positions carry no meaning (transformers
	// lets fully masked rows attend everywhere, the graph does not): drop
	// them before comparing.
	unpadded := func(kv []float32) []float32 {
		var out []float32
		per := cache.HeadDim
		for r := range batch {
			for h := range cache.KVHeads {
				for s := range seq + 1 {
					if mask2[r][s] == 1 {
						off := ((r*cache.KVHeads+h)*(seq+1) + s) * per
						out = append(out, kv[off:off+per]...)
					}
				}
			}
		}
		return out
	}
	for i := range cache.Layers {
		near("present keys", unpadded(present2[2*i].(*ort.Tensor[float32]).Data()), unpadded(ref.Keys[i]))
		near("present values", unpadded(present2[2*i+1].(*ort.Tensor[float32]).Data()), unpadded(ref.Values[i]))
	}
}

// TestDecoderWithPastRefusesOtherArchitectures checks the bad-input errors
// for a RoBERTa folder: its family registers no cached graphs, and the
// llama builder refuses its config.json.
func TestDecoderWithPastRefusesOtherArchitectures(t *testing.T) {
	_, dir := tinyFolder(t, "roberta")
	if _, err := kvcache.Build(dir, "roberta"); !badinput.Is(err) {
		t.Fatalf("kvcache.Build: got %v, want a bad-input error", err)
	}
	if _, err := decoderWithPast(dir); !badinput.Is(err) {
		t.Fatalf("decoderWithPast: got %v, want a bad-input error", err)
	}
}
