package lora

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/exporters"
	"github.com/migu-ml/migu/internal/testfix"
	"github.com/migu-ml/migu/modeldir"
)

// fixtureRoot holds the tiny models every test shares, built once.
var fixtureRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "migu-lora-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// archCase is one architecture of the tests: its transformers class and a
// batch (with padding) in the feeds its graph takes, labels included.
type archCase struct {
	arch, class string
	feeds       map[string][][]int64
}

var archCases = map[string]archCase{
	"llama":   {"llama", "LlamaForCausalLM", testfix.TinyBatch("llama")},
	"t5":      {"t5", "T5ForConditionalGeneration", testfix.TinyBatch("t5")},
	"roberta": {"roberta", "RobertaForMaskedLM", testfix.TinyBatch("roberta")},
}

// forwardFeeds drops the labels, which the forward graphs do not take.
func (c archCase) forwardFeeds() map[string][][]int64 { return testfix.WithoutLabels(c.feeds) }

type fixture struct {
	hf, model string
	err       error
	once      sync.Once
}

var fixtures sync.Map // arch → *fixture

// model returns the Hugging Face checkpoint and the exported model folder of
// a tiny model of arch, made once for the whole test binary.
func model(t testing.TB, arch string) (hf, dir string, man *modeldir.Manifest) {
	t.Helper()
	v, _ := fixtures.LoadOrStore(arch, &fixture{})
	f := v.(*fixture)
	f.once.Do(func() {
		f.hf = filepath.Join(fixtureRoot, arch+"-hf")
		f.model = filepath.Join(fixtureRoot, arch)
		if _, f.err = exporters.Init(f.hf, exporters.InitOptions{Arch: arch, Preset: "tiny", VocabSize: 600}); f.err != nil {
			return
		}
		_, f.err = exporters.Export(f.hf, f.model)
	})
	if f.err != nil {
		t.Fatal(f.err)
	}
	man, err := modeldir.ReadManifest(f.model)
	if err != nil {
		t.Fatal(err)
	}
	return f.hf, f.model, man
}

// Model loading and adapter injection as the other adapter tests do them.
var (
	loadModel = testfix.LoadModel
	injected  = testfix.Injected
)

// run runs an ONNX file once on int64 feeds plus the adapter parameters'
// values, returning every output by name.
func run(t testing.TB, path string, feeds map[string][][]int64, floats map[string]adapters.Param) map[string][]float32 {
	t.Helper()
	in := map[string]testfix.Floats{}
	for name, p := range floats {
		in[name] = testfix.Floats{Shape: p.Shape, Values: p.Init}
	}
	return testfix.Run(t, path, feeds, in)
}

// The reference helpers this package's tests share with others.
var (
	maxAbsDiff  = testfix.MaxAbsDiff
	closeTo     = testfix.CloseTo
	readPyRef   = testfix.ReadPyRef
	writeFeeds  = testfix.WriteFeeds
	sameTensors = testfix.SameTensors
)

const pyPrelude = testfix.PyPrelude
