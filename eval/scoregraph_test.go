package eval

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"google.golang.org/protobuf/proto"
)

// TestScoresMatchFullLogits: the log-likelihoods and greediness the
// forward graph's scoring outputs give (the head on the continuation
// positions only, log-softmax and argmax in the graph, float32) are those
// of the full-logits computation scoring used before (every position's
// logits brought back, log-softmax in float64 in Go, logSoftmaxAt) to
// float32 rounding, for tiny Llama and T5 models, with the standard
// operators and with the fused kernels (PickLogSoftmax). The same
// comparison with every continuation read one position late must fail,
// and a continuation made of the argmax token must be greedy where any
// other is not.
func TestScoresMatchFullLogits(t *testing.T) {
	var reqs []Request
	for _, c := range []string{"The cat sat", "", strings.Repeat("a long context ", 5)} {
		for _, cont := range []string{" on", " on the mat.", " quietly by the window"} {
			reqs = append(reqs, Request{c, cont})
		}
	}
	for _, arch := range []string{"llama", "t5"} {
		for _, kern := range []string{kernels.Off, "lib"} {
			t.Run(arch+"/kernels-"+kern, func(t *testing.T) {
				if kern == "lib" {
					kern = testenv.Kernels(t)
				}
				_, m := tinyModel(t, arch, Options{BatchSize: 4, Threads: 1, Kernels: kern, WholeRequests: true})
				if kern != kernels.Off && m.fused["CrossEntropy"] != 1 {
					t.Fatalf("the forward graph fused %v, want the scoring's log-softmax pick", m.fused)
				}
				toks := mustTokenize(t, m, reqs)
				got, err := m.logLikelihoodTokens(context.Background(), toks)
				if err != nil {
					t.Fatal(err)
				}
				full := fullLogitScores(t, m, toks, 0)
				late := fullLogitScores(t, m, toks, 1)
				worst, lateWorst := 0.0, 0.0
				for i := range toks {
					d := math.Abs(got[i].LogProb - full[i].LogProb)
					worst = max(worst, d)
					lateWorst = max(lateWorst, math.Abs(got[i].LogProb-late[i].LogProb))
					if d > 1e-5*max(1, math.Abs(full[i].LogProb)) || got[i].Greedy != full[i].Greedy || got[i].Tokens != len(toks[i].cont) {
						t.Errorf("request %d %q: scores %+v, full logits %+v", i, reqs[i], got[i], full[i])
					}
				}
				if lateWorst < 1e-2 {
					t.Errorf("reading every continuation one position late changes the log-likelihoods by %.2g only: the comparison cannot tell positions apart", lateWorst)
				}
				t.Logf("%d requests: largest difference %.2g (one position late: %.2g)", len(toks), worst, lateWorst)

				// Greediness: the argmax after a context, and another token.
				ctx := toks[0].ctx
				one := []tokenRequest{{ctx, []int{0}}}
				best := fullLogitScores(t, m, one, 0)[0].best
				other := (best + 1) % m.vocab
				res, err := m.logLikelihoodTokens(context.Background(), []tokenRequest{{ctx, []int{best}}, {ctx, []int{other}}})
				if err != nil {
					t.Fatal(err)
				}
				if !res[0].Greedy || res[1].Greedy {
					t.Errorf("argmax token %d greedy %v, token %d greedy %v; want true, false", best, res[0].Greedy, other, res[1].Greedy)
				}
			})
		}
	}
}

// fullScore is a request scored the old way, and the argmax token at
// the position of its first continuation token.
type fullScore struct {
	Result
	best int
}

// fullLogitScores scores tokenized requests the way scoring did before
// the graphs computed it: one request per run, the logits of every
// position returned, log-softmax of the continuation's positions (read
// shift positions late) in float64.
func fullLogitScores(t *testing.T, m *Model, reqs []tokenRequest, shift int) []fullScore {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]fullScore, len(reqs))
	for i, r := range reqs {
		var logits []float32
		var first, seq int
		var err error
		if m.seq2seq {
			dec := append([]int64{m.decoderStart()}, toInt64(r.cont[:len(r.cont)-1])...)
			seq = len(dec)
			logits, err = m.forwardSeq2Seq(toInt64(r.ctx), ones(len(r.ctx)), len(r.ctx), dec, ones(seq), seq, 1, every(seq), seq)
		} else {
			inp := toInt64(slices.Concat(r.ctx, r.cont)[:len(r.ctx)+len(r.cont)-1])
			seq = len(inp)
			first = len(r.ctx) - 1
			logits, err = m.forward(inp, ones(seq), 1, seq, every(seq), seq)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[i].Greedy = true
		for k, tok := range r.cont {
			p := min(first+k+shift, seq-1)
			lp, best := logSoftmaxAt(logits[p*m.vocab:(p+1)*m.vocab], tok)
			out[i].LogProb += lp
			out[i].Greedy = out[i].Greedy && best == tok
			if k == 0 {
				out[i].best = best
			}
		}
		out[i].Tokens = len(r.cont)
	}
	return out
}

func toInt64(a []int) []int64 {
	out := make([]int64, len(a))
	for i, v := range a {
		out[i] = int64(v)
	}
	return out
}

func ones(n int) []int64 { return slices.Repeat([]int64{1}, n) }

// every is the position query of all seq positions of one row.
func every(seq int) []int64 {
	pos := make([]int64, seq)
	for i := range pos {
		pos[i] = int64(i)
	}
	return pos
}

// TestScoringGathersBeforeTheHead: the forward graphs of the exported
// architectures get their positions gathered before the output head
// (headInput finds it), so the head runs on the scored positions only; a
// graph whose head it does not recognise gets them gathered from the
// logits (TestScoringWithoutAHead).
func TestScoringGathersBeforeTheHead(t *testing.T) {
	for _, arch := range []string{"llama", "t5", "roberta"} {
		t.Run(arch, func(t *testing.T) {
			_, dir := testfix.TinyModel(t, arch)
			m, err := onnx.Load(dir + "/" + modeldir.ModelFile)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			mm, _ := headInput(m.Graph())
			if mm == nil {
				t.Fatal("the output head was not found")
			}
			if err := addScoring(m, true); err != nil {
				t.Fatal(err)
			}
			if p := m.Graph().Producers()[mm.Input[0]]; p == nil || p.GetOpType() != "Gather" {
				t.Errorf("the head %s reads %s, not the gathered positions", mm.GetName(), mm.Input[0])
			}
		})
	}
}

// TestScoringWithoutAHead: a graph whose logits do not come from a
// recognised head (here x·(W∘W), a weight computed in the graph) gets
// its positions gathered from the logits; the scores it returns are
// log-softmax and argmax of x·(W∘W) at those positions, computed here in
// float64.
func TestScoringWithoutAHead(t *testing.T) {
	tinyModel(t, "llama", Options{Threads: 1}) // initialises ORT
	const rows, seq, hid, vocab = 2, 3, 4, 5
	x := make([]float32, rows*seq*hid)
	w := make([]float32, hid*vocab)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.7))
	}
	for i := range w {
		w[i] = float32(math.Cos(float64(i) * 1.3))
	}
	m := onnx.New("no_head", nil)
	g := m.Graph()
	g.AddInput("x", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq"), onnx.D(hid)})
	wc := g.Const("w", []int64{hid, vocab}, w...)
	g.Node("MatMul", []string{"x", g.Op("Mul", []string{wc, wc}, "w2")}, []string{"logits"}, "head")
	g.AddOutput("logits", onnx.Float, onnx.Shape{onnx.Sym("batch"), onnx.Sym("seq"), onnx.D(vocab)})
	if mm, _ := headInput(g); mm != nil {
		t.Fatalf("a head was found in a graph without one: %s", mm.GetName())
	}
	if err := addScoring(m, true); err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSessionFromBytes(raw, ort.SessionOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	pos := []int64{2, 0, 1, 1} // row 0 reads positions 2 and 0, row 1 position 1 twice
	index := []int64{pos[0], pos[1], seq + pos[2], seq + pos[3]}
	target := []int64{4, 1, 0, 3}
	in := map[string]ort.Value{}
	for name, v := range map[string]struct {
		data  any
		shape []int64
	}{"x": {x, []int64{rows, seq, hid}}, scoreIndex: {index, []int64{rows, 2}}, scoreTarget: {target, []int64{rows, 2, 1}}} {
		var val ort.Value
		var err error
		switch d := v.data.(type) {
		case []float32:
			val, err = ort.NewTensor(d, v.shape...)
		case []int64:
			val, err = ort.NewTensor(d, v.shape...)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer val.Close()
		in[name] = val
	}
	outs, err := sess.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]int{}
	for i, o := range sess.Outputs() {
		at[o.Name] = i
		defer outs[i].Close()
	}
	logp := outs[at[scoreLogProb]].(*ort.Tensor[float32]).Data()
	argmax := outs[at[scoreArgmax]].(*ort.Tensor[int64]).Data()
	for i, p := range pos {
		r := i / 2
		row := make([]float64, vocab)
		hi, best := math.Inf(-1), 0
		for v := range vocab {
			for h := range hid {
				wv := float64(w[h*vocab+v])
				row[v] += float64(x[(r*seq+int(p))*hid+h]) * wv * wv
			}
			if row[v] > hi {
				hi, best = row[v], v
			}
		}
		var sum float64
		for _, l := range row {
			sum += math.Exp(l - hi)
		}
		want := row[target[i]] - hi - math.Log(sum)
		if math.Abs(float64(logp[i])-want) > 1e-5 || argmax[i] != int64(best) {
			t.Errorf("row %d position %d: log-probability %.6f argmax %d, want %.6f %d", r, p, logp[i], argmax[i], want, best)
		}
	}
}
