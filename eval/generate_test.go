package eval

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/testenv"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx"
)

var genPrompts = []string{
	"The quick brown fox",
	"def add(a, b):\n    return",
	"Once upon a time, in a land far away, there lived a",
	"",
	"x",
}

// genReferenceScript greedily generates with transformers from token ids,
// one unpadded prompt at a time, with transformers' own key/value cache
// (a plain loop: generate() imports torch.distributed, which the torch of
// the reference environment cannot import on Python 3.11), and prints the
// new ids (end-of-sequence token dropped).
const genReferenceScript = `
import json, sys, torch, transformers
spec = json.load(open(sys.argv[1]))
model = transformers.AutoModelForCausalLM.from_pretrained(spec["hf"]).eval()
out = []
with torch.no_grad():
    for ids in spec["prompts"]:
        x, past, new = torch.tensor([ids]), None, []
        while len(new) < spec["max_new"]:
            r = model(input_ids=x, past_key_values=past, use_cache=True)
            past = r.past_key_values
            tok = int(r.logits[0, -1].argmax())
            if tok == spec["eos"]:
                break
            new.append(tok)
            x = torch.tensor([[tok]])
        out.append(new)
print(json.dumps(out))
`

// TestGenerateGreedyMatchesTransformers checks greedy generation three
// ways: with the key/value cache, without it (the full forward graph every
// step), both batched with left padding, against transformers' generate on
// each prompt alone.
func TestGenerateGreedyMatchesTransformers(t *testing.T) {
	hf, m := tinyModel(t, "llama", Options{BatchSize: 2})
	const maxNew = 24
	ctx := context.Background()
	cached, err := m.Generate(ctx, genPrompts, GenOptions{MaxNewTokens: maxNew})
	if err != nil {
		t.Fatal(err)
	}
	full, err := m.Generate(ctx, genPrompts, GenOptions{MaxNewTokens: maxNew, NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	var prompts [][]int64
	for _, p := range genPrompts {
		ids, err := m.encodePrompt(p, maxNew)
		if err != nil {
			t.Fatal(err)
		}
		prompts = append(prompts, ids)
	}
	spec, _ := json.Marshal(map[string]any{"hf": hf, "prompts": prompts, "max_new": maxNew, "eos": m.man.SpecialTokens["eos"]})
	specPath := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	var ref [][]int64
	if err := json.Unmarshal(testenv.RunPython(t, genReferenceScript, specPath), &ref); err != nil {
		t.Fatal(err)
	}
	long := 0
	for i := range genPrompts {
		t.Logf("prompt %d: %d tokens (%s) %q", i, cached[i].Tokens, cached[i].Reason, cached[i].Text)
		if cached[i].Tokens >= 5 {
			long++
		}
		if !slices.Equal(cached[i].ids, full[i].ids) || cached[i].Text != full[i].Text {
			t.Errorf("prompt %d: cached %v %q, uncached %v %q", i, cached[i].ids, cached[i].Text, full[i].ids, full[i].Text)
		}
		if !slices.Equal(cached[i].ids, ref[i]) {
			t.Errorf("prompt %d: generated %v, transformers %v", i, cached[i].ids, ref[i])
		}
		if cached[i].Tokens != len(cached[i].ids) || cached[i].Tokens > maxNew {
			t.Errorf("prompt %d: Tokens %d for %d ids", i, cached[i].Tokens, len(cached[i].ids))
		}
		want := ReasonLength
		if len(ref[i]) < maxNew {
			want = ReasonEOS
		}
		if cached[i].Reason != want {
			t.Errorf("prompt %d: reason %q, want %q", i, cached[i].Reason, want)
		}
	}
	if long < 3 {
		t.Errorf("only %d prompts generated 5 tokens or more: too little to compare", long)
	}
}

// TestGenerateFollowsFolderWeights writes a fine-tuned copy of a tiny
// model folder (modeldir.WriteTrained with a changed head) and checks that the
// cached graph reads the copy's weights: cached and uncached generation
// agree on the copy and differ from the base model's.
func TestGenerateFollowsFolderWeights(t *testing.T) {
	_, base := tinyModel(t, "llama", Options{})
	g := base.man.LinearsWithRoles(modeldir.RoleHead)[0]
	fwd, err := onnx.Load(filepath.Join(base.dir, modeldir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	head, err := fwd.Float32s(fwd.Graph().Initializer(g.Weight))
	fwd.Close()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range head {
		head[i] = float32(rng.NormFloat64())
	}
	tuned := filepath.Join(t.TempDir(), "tuned")
	if err := modeldir.WriteTrained(base.dir, tuned, map[string][]float32{g.Weight: head}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(tuned, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	o := GenOptions{MaxNewTokens: 12}
	before, err := base.Generate(ctx, genPrompts[:2], o)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := m.Generate(ctx, genPrompts[:2], o)
	if err != nil {
		t.Fatal(err)
	}
	o.NoCache = true
	full, err := m.Generate(ctx, genPrompts[:2], o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range cached {
		if !slices.Equal(cached[i].ids, full[i].ids) {
			t.Errorf("prompt %d: cached %v, uncached %v on the tuned folder", i, cached[i].ids, full[i].ids)
		}
		if slices.Equal(cached[i].ids, before[i].ids) {
			t.Errorf("prompt %d: the tuned folder generates the base model's %v", i, before[i].ids)
		}
	}
}

// TestGenerateStopStrings stops a greedy generation at strings taken from
// its own unstopped text and checks the cut.
func TestGenerateStopStrings(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{})
	ctx := context.Background()
	prompt := []string{"Once upon a time"}
	base, err := m.Generate(ctx, prompt, GenOptions{MaxNewTokens: 30})
	if err != nil {
		t.Fatal(err)
	}
	text := base[0].Text
	if len([]rune(text)) < 8 {
		t.Skipf("the tiny model's text %q is too short to cut", text)
	}
	r := []rune(text)
	later, earlier := string(r[len(r)-3:]), string(r[2:4])
	cases := []struct {
		name  string
		stops []string
	}{
		{"one stop", []string{later}},
		{"earliest of two", []string{later, earlier}},
		{"absent stop", []string{"\x00never"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := m.Generate(ctx, prompt, GenOptions{MaxNewTokens: 30, Stop: c.stops})
			if err != nil {
				t.Fatal(err)
			}
			cut, stop := earliestStop(text, c.stops)
			if stop == "" {
				if g[0].Text != text || g[0].Stop != "" || g[0].Reason != base[0].Reason {
					t.Errorf("got %+v, want the unstopped %+v", g[0], base[0])
				}
				return
			}
			if g[0].Text != text[:cut] || g[0].Stop != stop || g[0].Reason != ReasonStop {
				t.Errorf("got text %q stop %q reason %q, want %q cut at %q", g[0].Text, g[0].Stop, g[0].Reason, text[:cut], stop)
			}
			if !strings.HasPrefix(text, g[0].Text) || g[0].Tokens > base[0].Tokens {
				t.Errorf("stopped generation %+v is not a prefix of %+v", g[0], base[0])
			}
		})
	}
}

// TestGenerateRowsFinishApart stops some rows of a batch early (stop
// strings taken from their own texts), so that finished rows leave the
// batch, and checks every row against the same prompt generated alone,
// with and without the cache.
func TestGenerateRowsFinishApart(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{BatchSize: 1})
	ctx := context.Background()
	o := GenOptions{MaxNewTokens: 20}
	alone, err := m.Generate(ctx, genPrompts, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		r := []rune(alone[i].Text)
		if len(r) < 12 {
			t.Fatalf("prompt %d: text %q too short to cut", i, alone[i].Text)
		}
		// A stop from early in row 0 and from the middle of row 2.
		at := 3 + 5*i/2
		o.Stop = append(o.Stop, string(r[at:at+2]))
	}
	if alone, err = m.Generate(ctx, genPrompts, o); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, g := range alone {
		reasons[g.Reason]++
	}
	if reasons[ReasonStop] == 0 || reasons[ReasonLength] == 0 {
		t.Fatalf("reasons %v: the rows do not finish apart", reasons)
	}
	m.batch = len(genPrompts)
	for _, noCache := range []bool{false, true} {
		o.NoCache = noCache
		batched, err := m.Generate(ctx, genPrompts, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range genPrompts {
			if !slices.Equal(batched[i].ids, alone[i].ids) || batched[i].Text != alone[i].Text || batched[i].Reason != alone[i].Reason {
				t.Errorf("no cache %v, prompt %d: batched %v %q (%s), alone %v %q (%s)", noCache, i,
					batched[i].ids, batched[i].Text, batched[i].Reason, alone[i].ids, alone[i].Text, alone[i].Reason)
			}
		}
	}
}

func TestEarliestStop(t *testing.T) {
	cases := []struct {
		text  string
		stops []string
		cut   int
		stop  string
	}{
		{"abc\ndef x", []string{"\ndef"}, 3, "\ndef"},
		{"abc\nclass\ndef", []string{"\ndef", "\nclass"}, 3, "\nclass"},
		{"aXbY", []string{"Y", "X"}, 1, "X"},
		{"abab", []string{"ab", "aba"}, 0, "aba"},
		{"none here", []string{"\n#"}, 10, ""},
		{"", nil, 1, ""},
	}
	for _, c := range cases {
		cut, stop := earliestStop(c.text, c.stops)
		if stop != c.stop || (stop != "" && cut != c.cut) {
			t.Errorf("earliestStop(%q, %q) = %d %q, want %d %q", c.text, c.stops, cut, stop, c.cut, c.stop)
		}
	}
}

// TestPickDistribution samples from a hand-made distribution and compares
// the frequencies with the hand-computed temperature/top-p probabilities.
func TestPickDistribution(t *testing.T) {
	p := []float64{0.5, 0.3, 0.15, 0.05}
	logits := make([]float32, len(p))
	for i, v := range p {
		logits[i] = float32(math.Log(v))
	}
	norm := func(w []float64) []float64 {
		var s float64
		for _, v := range w {
			s += v
		}
		out := make([]float64, len(w))
		for i, v := range w {
			out[i] = v / s
		}
		return out
	}
	cases := []struct {
		name string
		o    GenOptions
		want []float64
	}{
		{"greedy", GenOptions{}, []float64{1, 0, 0, 0}},
		{"temperature 1", GenOptions{Temperature: 1}, p},
		{"temperature 2", GenOptions{Temperature: 2}, norm([]float64{math.Sqrt(0.5), math.Sqrt(0.3), math.Sqrt(0.15), math.Sqrt(0.05)})},
		{"top-p 0.6", GenOptions{Temperature: 1, TopP: 0.6}, []float64{0.5 / 0.8, 0.3 / 0.8, 0, 0}},
		{"top-p 0.8 reached exactly", GenOptions{Temperature: 1, TopP: 0.8}, []float64{0.5 / 0.8, 0.3 / 0.8, 0, 0}},
		{"top-p 0.9", GenOptions{Temperature: 1, TopP: 0.9}, norm([]float64{0.5, 0.3, 0.15, 0})},
		{"top-p 0.1", GenOptions{Temperature: 1, TopP: 0.1}, []float64{1, 0, 0, 0}},
	}
	const n = 40000
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 0))
			counts := make([]float64, len(p))
			probs := make([]float64, len(p))
			for range n {
				counts[pick(logits, c.o, rng, probs)]++
			}
			for i := range counts {
				got := counts[i] / n
				if math.Abs(got-c.want[i]) > 0.01 || (c.want[i] == 0 && got != 0) {
					t.Errorf("token %d: frequency %.4f, want %.4f", i, got, c.want[i])
				}
			}
		})
	}
}

// TestGenerateSampling checks that a seed reproduces a sampled
// generation whatever the batch size, and that another seed changes it.
func TestGenerateSampling(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{BatchSize: 3})
	ctx := context.Background()
	o := GenOptions{MaxNewTokens: 16, Temperature: 1.5, TopP: 0.95, Seed: 11}
	a, err := m.Generate(ctx, genPrompts, o)
	if err != nil {
		t.Fatal(err)
	}
	m.batch = 1
	b, err := m.Generate(ctx, genPrompts, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Seed = 12
	c, err := m.Generate(ctx, genPrompts, o)
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for i := range genPrompts {
		if !slices.Equal(a[i].ids, b[i].ids) {
			t.Errorf("prompt %d: batch 3 sampled %v, batch 1 %v", i, a[i].ids, b[i].ids)
		}
		if slices.Equal(a[i].ids, c[i].ids) {
			same++
		}
	}
	if same == len(genPrompts) {
		t.Error("another seed sampled the same tokens for every prompt")
	}
}

func TestGenerateBadOptions(t *testing.T) {
	_, m := tinyModel(t, "llama", Options{})
	cases := []GenOptions{
		{MaxNewTokens: -1},
		{Temperature: -0.5},
		{TopP: 1.5},
		{Stop: []string{""}},
		{MaxNewTokens: 100000},
	}
	for _, o := range cases {
		if _, err := m.Generate(context.Background(), []string{"hi"}, o); !badinput.Is(err) {
			t.Errorf("%+v: got %v, want a bad-input error", o, err)
		}
	}
}

// TestGenerateSeq2Seq runs batched T5 generation with the cached graphs
// and without them, and checks both against greedy decoding done by hand,
// one prompt at a time, with the forward graph.
func TestGenerateSeq2Seq(t *testing.T) {
	_, m := tinyModel(t, "t5", Options{BatchSize: 2})
	prompts := genPrompts[:3]
	got, err := m.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	full, err := m.Generate(context.Background(), prompts, GenOptions{MaxNewTokens: 8, NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	eos := m.man.SpecialTokens["eos"]
	for i, p := range prompts {
		enc, err := m.encodePrompt(p, 8)
		if err != nil {
			t.Fatal(err)
		}
		mask := slices.Repeat([]int64{1}, len(enc))
		dec := []int64{m.decoderStart()}
		var want []int64
		m.mu.Lock()
		for len(want) < 8 {
			logits, err := m.forwardSeq2Seq(enc, mask, len(enc), dec, slices.Repeat([]int64{1}, len(dec)), len(dec), 1, lastPositions(1, len(dec)), 1)
			if err != nil {
				m.mu.Unlock()
				t.Fatal(err)
			}
			_, best := logSoftmaxAt(logits, 0)
			if int64(best) == eos {
				break
			}
			want = append(want, int64(best))
			dec = append(dec, int64(best))
		}
		m.mu.Unlock()
		if !slices.Equal(got[i].ids, want) || !slices.Equal(full[i].ids, want) {
			t.Errorf("prompt %d: batched generation %v (without cache %v), one by one %v", i, got[i].ids, full[i].ids, want)
		}
	}
	// The random tiny T5 greedily repeats one token; sampling (same seed,
	// so the same random numbers) compares the two paths on varied tokens.
	o := GenOptions{MaxNewTokens: 12, Temperature: 1, Seed: 5}
	sampled, err := m.Generate(context.Background(), prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	o.NoCache = true
	sampledFull, err := m.Generate(context.Background(), prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[int64]bool{}
	for i := range prompts {
		if !slices.Equal(sampled[i].ids, sampledFull[i].ids) {
			t.Errorf("prompt %d: sampled %v with the cache, %v without", i, sampled[i].ids, sampledFull[i].ids)
		}
		for _, id := range sampled[i].ids {
			distinct[id] = true
		}
	}
	if len(distinct) < 5 {
		t.Errorf("only %d distinct sampled tokens: too few to compare the paths", len(distinct))
	}

	// A stop string from row 0's text ends it early: its row leaves the
	// batch (encoder outputs included) while the others go on.
	r := []rune(sampled[0].Text)
	if len(r) < 4 {
		t.Fatalf("sampled text %q too short to cut", sampled[0].Text)
	}
	o = GenOptions{MaxNewTokens: 12, Temperature: 1, Seed: 5, Stop: []string{string(r[1:3])}}
	batched, err := m.Generate(context.Background(), prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	m.batch = 1
	alone, err := m.Generate(context.Background(), prompts, o)
	if err != nil {
		t.Fatal(err)
	}
	if batched[0].Reason != ReasonStop {
		t.Errorf("row 0 did not stop: %+v", batched[0])
	}
	for i := range prompts {
		if !slices.Equal(batched[i].ids, alone[i].ids) || batched[i].Reason != alone[i].Reason {
			t.Errorf("prompt %d: batched %v (%s), alone %v (%s)", i, batched[i].ids, batched[i].Reason, alone[i].ids, alone[i].Reason)
		}
	}
}
