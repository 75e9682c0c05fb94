package grad

import (
	"math/rand/v2"
	"testing"

	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// An embedding looked up by a batch full of repeated tokens gets, on two
// threads and every run, the exact sum of its rows' gradients: the float64
// sums in token order, bit for bit. (ONNX Runtime's ScatterND with
// reduction add, which the rule used before, lost updates of repeated
// indices on two threads: rows off by whole units, different every run.)
func TestGatherGradRepeatedIdsOnThreads(t *testing.T) {
	initORT(t)
	const vocab, hidden, tokens = 16, 512, 4096
	rng := rand.New(rand.NewPCG(3, 5))
	ids := make([]int64, tokens)
	for i := range ids {
		ids[i] = int64(rng.IntN(vocab)) - int64(vocab)*int64(rng.IntN(2)) // negative ids count from the end
	}
	upstream := make([]float64, tokens*hidden)
	for i := range upstream {
		upstream[i] = rng.Float64()*2 - 1
	}
	table := make([]float64, vocab*hidden)

	m := onnx.New("gather", nil)
	g := m.Graph()
	g.AddInput("table", onnx.Double, onnx.Shape{onnx.D(vocab), onnx.D(hidden)})
	// Ids and upstream gradients are inputs: as initializers, ONNX Runtime
	// would fold the whole gradient into a constant when it loads the graph.
	g.AddInput("ids", onnx.Int64, onnx.Shape{onnx.D(tokens)})
	g.AddInput("r", onnx.Double, onnx.Shape{onnx.D(tokens), onnx.D(hidden)})
	y := g.Op("Gather", []string{"table", "ids"}, "y")
	sum := g.Op("ReduceSum", []string{g.Op("Mul", []string{y, "r"}, "weighted")}, "sum", onnx.AttrInt("keepdims", 0))
	loss := g.Op("Reshape", []string{sum, g.ConstInt64("one", []int64{1}, 1)}, "loss")
	g.AddOutput(loss, onnx.Double, onnx.Shape{onnx.D(1)})
	path := saveWithGradients(t, m, loss, "gather.onnx", "table")

	want := make([]float64, vocab*hidden)
	for i, id := range ids {
		row := (id + vocab) % vocab
		for j := range hidden {
			want[row*hidden+int64(j)] += upstream[i*hidden+j]
		}
	}
	s, err := ort.NewSession(path, ort.SessionOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	feeds := map[string]ort.Value{}
	for name, v := range map[string]func() (ort.Value, error){
		"table": func() (ort.Value, error) { return ort.NewTensor(table, vocab, hidden) },
		"ids":   func() (ort.Value, error) { return ort.NewTensor(ids, tokens) },
		"r":     func() (ort.Value, error) { return ort.NewTensor(upstream, tokens, hidden) },
	} {
		in, err := v()
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		feeds[name] = in
	}
	for run := range 10 {
		outs, err := s.Run(feeds)
		if err != nil {
			t.Fatal(err)
		}
		got := outs[1].(*ort.Tensor[float64]).Data()
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("run %d on 2 threads: d loss/d table[%d][%d] = %.17g, want %.17g", run+1, i/hidden, i%hidden, got[i], want[i])
			}
		}
		for _, o := range outs {
			o.Close()
		}
	}
}
