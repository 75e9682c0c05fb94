package exporters

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// t5CacheScript runs two decoder steps of a transformers T5 with its own
// cache (the start token, then one token per row) over a right-padded
// source batch, and writes both steps' logits and the cache after them.
const t5CacheScript = `
import json, sys
import torch, transformers
spec = json.load(open(sys.argv[1]))
model = transformers.T5ForConditionalGeneration.from_pretrained(spec["hf"]).eval()
ids = torch.tensor(spec["ids"]); mask = torch.tensor(spec["mask"])
start = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
out = {}
with torch.no_grad():
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask)
    r = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=start, use_cache=True)
    out["logits0"] = r.logits[:, -1].flatten().tolist()
    r2 = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=torch.tensor(spec["next"]),
               past_key_values=r.past_key_values, use_cache=True)
    out["logits1"] = r2.logits[:, -1].flatten().tolist()
    pkv = r2.past_key_values
    if hasattr(pkv, "to_legacy_cache"):
        pkv = pkv.to_legacy_cache()
    out["cache"] = [[t.flatten().tolist() for t in layer] for layer in pkv]
json.dump(out, open(sys.argv[2], "w"))
`

// TestSeq2SeqWithPastParity runs the cached T5 encoder once and the cached
// decoder for two steps, and compares logits, self-attention and
// cross-attention keys and values with transformers within 1e-4.
func TestSeq2SeqWithPastParity(t *testing.T) {
	lib := testenv.ORTLib(t)
	hf, dir := tinyFolder(t, "t5")
	graphs, err := kvcache.Build(dir, "t5")
	if err != nil {
		t.Fatal(err)
	}
	encoder, decoder, cache := graphs.Encoder, graphs.Decoder, graphs.Cache
	if err := ort.Init(ort.InitOptions{LibraryPath: lib}); err != nil {
		t.Fatal(err)
	}
	session := func(m *onnx.Model) *ort.Session {
		raw, err := proto.Marshal(m.Proto)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: 1, ExternalDataDir: m.Dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	encS, decS := session(encoder), session(decoder)
	ids := [][]int64{{5, 17, 40, 300, 12, 99}, {250, 8, 77, 1, 0, 0}}
	mask := [][]int64{{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}}
	next := [][]int64{{31}, {420}}
	const batch, src = 2, 6
	tensor := func(rows [][]int64) *ort.Tensor[int64] {
		var flat []int64
		for _, r := range rows {
			flat = append(flat, r...)
		}
		v, err := ort.NewTensor(flat, int64(len(rows)), int64(len(rows[0])))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	run := func(s *ort.Session, in map[string]ort.Value) map[string]*ort.Tensor[float32] {
		outs, err := s.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]*ort.Tensor[float32]{}
		for i, info := range s.Outputs() {
			byName[info.Name] = outs[i].(*ort.Tensor[float32])
			t.Cleanup(func() { outs[i].Close() })
		}
		return byName
	}
	maskT := tensor(mask)
	enc := run(encS, map[string]ort.Value{"input_ids": tensor(ids), "attention_mask": maskT})
	step := func(tokens [][]int64, past map[string]*ort.Tensor[float32]) map[string]*ort.Tensor[float32] {
		in := map[string]ort.Value{"decoder_input_ids": tensor(tokens), "attention_mask": maskT}
		for i := range cache.Layers {
			in[cache.CrossKey[i]], in[cache.CrossValue[i]] = enc[cache.CrossKey[i]], enc[cache.CrossValue[i]]
			if past == nil {
				for _, name := range []string{cache.PastKey[i], cache.PastValue[i]} {
					z, err := ort.Zeros[float32](batch, int64(cache.KVHeads), 0, int64(cache.HeadDim))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { z.Close() })
					in[name] = z
				}
			} else {
				in[cache.PastKey[i]], in[cache.PastValue[i]] = past[cache.PresentKey[i]], past[cache.PresentValue[i]]
			}
		}
		return run(decS, in)
	}
	var config struct {
		Start int64 `json:"decoder_start_token_id"`
	}
	raw, err := os.ReadFile(filepath.Join(hf, "config.json"))
	if err != nil || json.Unmarshal(raw, &config) != nil {
		t.Fatalf("config.json: %v", err)
	}
	start := [][]int64{{config.Start}, {config.Start}}
	first := step(start, nil)
	second := step(next, first)

	spec, _ := json.Marshal(map[string]any{"hf": hf, "ids": ids, "mask": mask, "next": next})
	specPath, outPath := filepath.Join(t.TempDir(), "spec.json"), filepath.Join(t.TempDir(), "ref.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunPython(t, t5CacheScript, specPath, outPath)
	var ref struct {
		Logits0, Logits1 []float32
		Cache            [][][]float32
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
	near("first step logits", first["logits"].Data(), ref.Logits0)
	near("cached step logits", second["logits"].Data(), ref.Logits1)
	for i := range cache.Layers {
		near("self keys", second[cache.PresentKey[i]].Data(), ref.Cache[i][0])
		near("self values", second[cache.PresentValue[i]].Data(), ref.Cache[i][1])
		near("cross keys", enc[cache.CrossKey[i]].Data(), ref.Cache[i][2])
		near("cross values", enc[cache.CrossValue[i]].Data(), ref.Cache[i][3])
	}
}
