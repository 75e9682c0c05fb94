package train

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/kernels"
)

// The head on labelled rows gives the loss, every gradient and every MIGU
// tap of the head on every token, to float32 rounding: llama (clm, the
// padding unlabelled), roberta (mlm, a third of the tokens labelled) and
// t5 (seq2seq), full fine-tuning (the head's nodes on every row kept for
// their taps) and LoRA (the head on the labelled rows only), with the
// standard operators and with the fused kernels and oneDNN products; and
// a batch without any labelled token gives a zero loss and zero
// gradients, as before.
func TestHeadOnLabelledRows(t *testing.T) {
	kernelsLib, bf16Lib := testenv.Kernels(t), bf16LibOrEmpty(t)
	feeds := tinyFeeds()
	unlabelled := map[string]map[string][][]int64{}
	for arch, f := range feeds {
		u := map[string][][]int64{}
		for k, v := range f {
			u[k] = v
		}
		labels := make([][]int64, len(f["labels"]))
		for i, row := range f["labels"] {
			labels[i] = make([]int64, len(row))
			for j := range row {
				labels[i][j] = IgnoreIndex
			}
		}
		u["labels"] = labels
		unlabelled[arch] = u
	}
	outer := t
	models := map[string]string{}
	for _, arch := range []string{"llama", "roberta", "t5"} {
		for _, method := range []string{"full", "lora"} {
			for _, fast := range []bool{false, true} {
				for _, none := range []bool{false, true} {
					name := arch + "/" + method
					if fast {
						name += "/fused"
					}
					if none {
						name += "/no-labels"
					}
					t.Run(name, func(t *testing.T) {
						if models[arch] == "" {
							_, models[arch] = testfix.TinyModel(outer, arch)
						}
						spec := recomputeSpec{model: models[arch], method: method, feeds: feeds[arch], allRows: true}
						if none {
							spec.feeds = unlabelled[arch]
						}
						if fast {
							spec.kernels = kernelsLib
							if bf16Lib != "" {
								spec.oneDNN, spec.oneDNNLib = kernels.F32Roles{Forward: true, WeightGrads: true, InputGrads: true, Attention: true}, bf16Lib
							}
						}
						art, want, _ := spec.run(t, RecomputeNone)
						spec.allRows = false
						rart, got, g := spec.run(t, RecomputeNone)
						worst := worstRelDiff(t, rart, got, want)
						if len(art.Params) != len(rart.Params) || len(art.Taps) != len(rart.Taps) || len(rart.Taps) == 0 {
							t.Fatalf("%d params and %d taps on labelled rows, %d and %d on every row", len(rart.Params), len(rart.Taps), len(art.Params), len(art.Taps))
						}
						if none {
							for _, p := range rart.Params {
								for _, v := range got[p.Grad] {
									if v != 0 {
										t.Fatalf("no labelled token, yet gradient %s holds %g", p.Name, v)
									}
								}
							}
							if got[rart.Loss][0] != 0 {
								t.Fatalf("no labelled token, yet loss %g", got[rart.Loss][0])
							}
						}
						// The head's vocabulary product runs on the labelled
						// rows and, for its tap (full fine-tuning), on the
						// others; none is left on every row.
						linears := spec.manifest(t).Linears
						head := linears[len(linears)-1].Node
						var copies, rest, originals int
						for _, n := range g.P.Node {
							switch n.GetName() {
							case head + rowsSuffix:
								copies++
							case head + restSuffix:
								rest++
							case head:
								originals++
							}
						}
						if wantRest := map[string]int{"full": 1, "lora": 0}[method]; copies != 1 || rest != wantRest || originals != 0 {
							t.Fatalf("head %s: %d copies on labelled rows, %d on the others, %d originals (want 1, %d, 0)", head, copies, rest, originals, wantRest)
						}
						t.Logf("%d params, %d taps: max relative difference %.2g", len(rart.Params), len(rart.Taps), worst)
					})
				}
			}
		}
	}
}

// bf16LibOrEmpty is the bf16 library where it can be built, "" elsewhere
// (the fused cases then run without oneDNN products); its subtest reports
// the skip.
func bf16LibOrEmpty(t *testing.T) string {
	var lib string
	t.Run("bf16-library", func(t *testing.T) { lib = testenv.BF16(t) })
	return lib
}

// A model folder without block boundaries (written before migu.json had
// them) gathers the labelled rows of the logits only: the loss and the
// gradients stay those of the head on every token.
func TestHeadRowsWithoutBlocks(t *testing.T) {
	_, model := testfix.TinyModel(t, "llama")
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(dir, os.DirFS(model)); err != nil {
		t.Fatal(err)
	}
	man, err := modeldir.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	man.Blocks = nil
	raw, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, modeldir.ManifestFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := recomputeSpec{model: dir, method: "full", feeds: tinyFeeds()["llama"], allRows: true}
	art, want, _ := spec.run(t, RecomputeNone)
	spec.allRows = false
	_, got, g := spec.run(t, RecomputeNone)
	worstRelDiff(t, art, got, want)
	gathered := 0
	for _, n := range g.P.Node {
		if strings.HasSuffix(n.GetName(), rowsSuffix) {
			t.Fatalf("node %s copied onto the labelled rows without block boundaries", n.GetName())
		}
		if n.GetOpType() == "Gather" && n.Output[0] == man.Outputs[0]+rowsSuffix {
			gathered++
		}
	}
	if gathered != 1 {
		t.Fatalf("%d Gathers of the labelled rows of %s", gathered, man.Outputs[0])
	}
}
