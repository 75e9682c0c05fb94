package eval

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/modeldir"
	"github.com/migu-ml/migu/onnx/kernels"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/tokenizer"
)

// DefaultBatchSize is the number of sequences per forward run when
// Options.BatchSize is 0.
const DefaultBatchSize = 8

// DefaultMaxLength is the context length used when the model declares none
// (relative or rotary positions without a limit), as lm-eval's HFLM falls
// back to 2048 tokens.
const DefaultMaxLength = 2048

// Options open a model folder for evaluation.
type Options struct {
	Adapter   string // adapter folder (PEFT layout, a registered kind); merged into the weights in memory
	Threads   int    // ORT intra-op threads (0: ORT's default)
	BatchSize int    // sequences per forward run (0: DefaultBatchSize)
	Provider  string // ort provider ("" = cpu)
	// MaxLength overrides the context length used for truncation (0: the
	// manifest's max_length, else tokenizer_config.json's
	// model_max_length, else DefaultMaxLength).
	MaxLength int
	// Kernels chooses migu's fused kernels (package onnx/kernels), as
	// train.Config.Kernels does: "" uses the library kernels.Find finds
	// ($MIGU_KERNELS, else bin/libmigu_kernels.so), "off" none, anything
	// else is the library's path. Without one the graphs run in standard
	// operators, with the same results to float32 rounding.
	Kernels string
	// Products chooses where the weight products run, as train's
	// --products: "", ProductsAuto and ProductsMLAS in ORT's MLAS (see
	// kernels.go for why auto differs from training's), ProductsOneDNN in
	// oneDNN's float32 matmul (needs the bf16 library). The scores agree
	// to float32 rounding.
	Products string
	// Profile turns ORT's profiler on for every session the model opens:
	// each writes <Profile>_<date>.json when it closes (benchmarks/perf's
	// ortprof.py summarises them).
	Profile string
	// WholeRequests scores every request in full, context included, even
	// when requests share a context (loglik_shared.go scores such a
	// context once): the results agree to float32 rounding, and the
	// benchmarks time both ways.
	WholeRequests bool
	// UnfusedAttention keeps attention in standard operators where the
	// kernel library would fuse it (ai.migu.Attention, on CPUs with
	// AVX-512: kernels.AttentionFast), as train.Config.UnfusedAttention
	// does; the benchmarks compare the two.
	UnfusedAttention bool
}

// Model is a model folder opened for scoring: one ORT session on the
// forward graph, its tokenizer and manifest. A Model runs one forward at a
// time (calls from several goroutines are serialised).
type Model struct {
	dir string // folder the session was loaded from (a temporary merge with an adapter)
	tmp string // temporary folder to remove on Close, "" without adapter
	man *modeldir.Manifest
	tok *tokenizer.Tokenizer
	// sess is the forward graph's session, opened on first use
	// (forwardSession), so that scoring the cached decoder serves whole
	// (shared contexts) never loads a second copy of the weights.
	// fwdGraph is the forward graph with its scoring outputs
	// (scoregraph.go), fused when the kernel library is loaded, and
	// fwdOpts its options.
	sess     *ort.Session
	fwdGraph []byte
	fwdOpts  ort.SessionOptions
	closed   bool
	batch    int
	maxLen   int
	vocab    int
	seq2seq  bool
	mlm      bool // masked-LM model: only CL rank mode scores it, by pseudo-log-likelihood (mlm.go)

	mu       sync.Mutex // guards fwd, progress and the session's use
	progress func(done, total int)
	fwd      forwardState
	gen      generator // generation's key/value-cache session, built on first use (generate.go)
	// unshared scores every request whole, context included
	// (Options.WholeRequests; tests compare it with loglik_shared.go's
	// path).
	unshared bool
	// contRunCost is what one more continuation run costs, in padded
	// positions, where shared-context scoring splits its continuations
	// into runs (contRuns); tests and benchmarks set 1<<30 for one run.
	contRunCost int
	// fused counts what kernels.Fuse replaced in the forward graph, by
	// kernel, and the products moved to oneDNN (rewrite; empty without
	// the kernel library and oneDNN).
	fused map[string]int
}

// Open loads modelDir (made by `migu export`) for evaluation; with
// o.Adapter it first merges the adapter into a copy of the weights in a
// temporary folder that Close removes. The caller has already called
// ort.Init.
func Open(modelDir string, o Options) (*Model, error) {
	if o.BatchSize < 0 || o.Threads < 0 || o.MaxLength < 0 {
		return nil, badinput.Errorf("batch size, threads and max length must not be negative (got %d, %d, %d)", o.BatchSize, o.Threads, o.MaxLength)
	}
	man, err := modeldir.Check(modelDir)
	if err != nil {
		return nil, err
	}
	var seq2seq, mlm bool
	switch man.Objective {
	case "clm":
	case "seq2seq":
		seq2seq = true
	case "mlm":
		mlm = true
	default:
		return nil, badinput.Errorf("%s: a %s model (objective %s) has no language-model head; eval scores causal (clm), seq2seq and, for CL rank accuracy only, masked-LM models", modelDir, man.Architecture, man.Objective)
	}
	if err := checkInterface(man, seq2seq); err != nil {
		return nil, badinput.Errorf("%s: %v", modelDir, err)
	}
	tokPath, err := findTokenizer(modelDir)
	if err != nil {
		return nil, err
	}
	m := &Model{dir: modelDir, man: man, seq2seq: seq2seq, mlm: mlm, vocab: int(man.VocabSize), unshared: o.WholeRequests, contRunCost: defaultContRunCost}
	lib, err := kernelLibrary(o)
	if err != nil {
		return nil, err
	}
	bf16Lib, err := productsLibrary(o)
	if err != nil {
		return nil, err
	}
	m.gen.opts = ort.SessionOptions{Threads: o.Threads, Provider: o.Provider, ProfilePrefix: o.Profile}
	m.gen.rewrites = rewrites{kernels: lib != "", oneDNN: bf16Lib != "",
		attention: lib != "" && !o.UnfusedAttention && kernels.AttentionFast()}
	for _, l := range []string{lib, bf16Lib} {
		if l != "" {
			m.gen.opts.CustomOps = append(m.gen.opts.CustomOps, l)
		}
	}
	if o.Adapter != "" {
		m.tmp, err = os.MkdirTemp("", "migu-eval-")
		if err != nil {
			return nil, err
		}
		merged := filepath.Join(m.tmp, "model")
		if _, err := adapters.Merge(modelDir, o.Adapter, merged); err != nil {
			os.RemoveAll(m.tmp)
			return nil, err
		}
		m.dir = merged
	}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	m.tok, err = tokenizer.Load(tokPath)
	if err != nil {
		return fail(err)
	}
	so := ort.SessionOptions{
		Threads:       o.Threads,
		Provider:      o.Provider,
		Outputs:       []string{"logits", scoreLogProb, scoreArgmax},
		CustomOps:     m.gen.opts.CustomOps,
		ProfilePrefix: o.Profile,
	}
	if m.fwdGraph, m.fused, err = forwardModel(m.dir, m.gen.rewrites); err != nil {
		return fail(err)
	}
	so.ExternalDataDir = m.dir
	m.fwdOpts = so
	m.batch = o.BatchSize
	if m.batch == 0 {
		m.batch = DefaultBatchSize
	}
	m.maxLen = o.MaxLength
	if m.maxLen == 0 {
		m.maxLen = int(man.MaxLength)
	}
	if m.maxLen == 0 {
		m.maxLen = tokenizerMaxLength(modelDir)
	}
	if m.maxLen == 0 {
		m.maxLen = DefaultMaxLength
	}
	return m, nil
}

// tokenizerMaxLength reads model_max_length from tokenizer_config.json in
// dir, as lm-eval's HFLM does when the model config sets no position
// limit (T5 checkpoints say 512); 0 when absent or the "no limit"
// sentinel transformers writes (about 1e30).
func tokenizerMaxLength(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return 0
	}
	var cfg struct {
		ModelMaxLength float64 `json:"model_max_length"`
	}
	if json.Unmarshal(data, &cfg) != nil || cfg.ModelMaxLength <= 0 || cfg.ModelMaxLength > 1e12 {
		return 0
	}
	return int(cfg.ModelMaxLength)
}

// checkInterface makes sure the graph takes and gives what scoring feeds
// and reads.
func checkInterface(man *modeldir.Manifest, seq2seq bool) error {
	want := []string{"input_ids", "attention_mask"}
	if seq2seq {
		want = append(want, "decoder_input_ids", "decoder_attention_mask")
	}
	has := map[string]bool{}
	for _, in := range man.Inputs {
		has[in] = true
	}
	for _, w := range want {
		if !has[w] {
			return fmt.Errorf("the graph has no input %q (inputs: %v)", w, man.Inputs)
		}
	}
	for _, out := range man.Outputs {
		if out == "logits" {
			if man.VocabSize <= 0 {
				return fmt.Errorf("migu.json: vocab_size must be positive")
			}
			return nil
		}
	}
	return fmt.Errorf("the graph has no output \"logits\" (outputs: %v)", man.Outputs)
}

// findTokenizer returns the tokenizer file of a model folder, or a bad
// input error naming the folder.
func findTokenizer(dir string) (string, error) {
	for _, name := range []string{modeldir.TokenizerFile, "tokenizer.model", "spiece.model"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", badinput.Errorf("%s: no %s; copy the tokenizer of the checkpoint into the model folder", dir, modeldir.TokenizerFile)
}

// Close releases the session and removes the temporary merged copy made
// for an adapter. Closing twice is harmless.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	m.closed = true
	m.fwd.close()
	m.gen.close()
	if m.sess != nil {
		err = m.sess.Close()
		m.sess = nil
	}
	if m.tmp != "" {
		if rerr := os.RemoveAll(m.tmp); err == nil {
			err = rerr
		}
		m.tmp = ""
	}
	return err
}

// SetProgress makes log-likelihood scoring report its progress: fn(done,
// total) runs after every batch with the requests scored so far and the
// requests of the call. nil turns reporting off.
func (m *Model) SetProgress(fn func(done, total int)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.progress = fn
}

// Tokenizer is the model folder's tokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// Manifest is the model folder's migu.json.
func (m *Model) Manifest() *modeldir.Manifest { return m.man }

// MaxLength is the context length used for truncation: the longest
// sequence one forward run sees.
func (m *Model) MaxLength() int { return m.maxLen }

// BatchSize is the number of sequences per forward run.
func (m *Model) BatchSize() int { return m.batch }

// Seq2Seq reports whether the model is an encoder-decoder (T5): contexts go
// to the encoder and continuations are decoder targets.
func (m *Model) Seq2Seq() bool { return m.seq2seq }

// MaskedLM reports whether the model is a masked-language model (RoBERTa
// trained with objective mlm): it has no left-to-right likelihood, so only
// CL rank accuracy (by pseudo-log-likelihood) scores it.
func (m *Model) MaskedLM() bool { return m.mlm }

// errMaskedLM is the error of every scoring path a masked-LM model lacks.
func (m *Model) errMaskedLM(what string) error {
	return badinput.Errorf("%s: a masked-LM model (%s, objective mlm) has no left-to-right likelihood, so it cannot %s; only `%v cl %v rank` (pseudo-log-likelihood) scores it", m.dir, m.man.Architecture, what, badinput.Setting("task"), badinput.Setting("cl_mode"))
}

// prefixToken is the token that stands for an empty context: BOS, else
// EOS, as lm-eval's prefix_token_id.
func (m *Model) prefixToken() int64 {
	if id, ok := m.man.SpecialTokens["bos"]; ok {
		return id
	}
	return m.man.SpecialTokens["eos"]
}

// decoderStart is the first decoder input of a seq2seq model (T5's
// decoder_start_token_id, the pad token).
func (m *Model) decoderStart() int64 {
	if id, ok := m.man.SpecialTokens["decoder_start"]; ok {
		return id
	}
	return m.man.SpecialTokens["pad"]
}

// forwardState holds what the forward runs reuse: one ORT binding for
// the runs that return logits and one for those that return scores (an
// output left unbound is not copied out), the tensors bound to each by
// its last run (closed when the next run replaces them) and the buffers,
// grown to the largest batch seen.
type forwardState struct {
	logitsRun, scoreRun boundRun
	index, target       []int64
	logits, logp        []float32
	argmax              []int64
}

// boundRun is one ORT binding of the forward session and the tensors its
// last run bound.
type boundRun struct {
	bind  *ort.Binding
	bound []ort.Value
}

func (f *forwardState) close() {
	for _, r := range []*boundRun{&f.logitsRun, &f.scoreRun} {
		r.release()
		if r.bind != nil {
			r.bind.Close()
			r.bind = nil
		}
	}
	f.logits, f.logp, f.argmax, f.index, f.target = nil, nil, nil, nil, nil
}

// release closes the tensors of the previous run.
func (r *boundRun) release() {
	for _, v := range r.bound {
		v.Close()
	}
	r.bound = r.bound[:0]
}

// forward runs a causal model on a batch: ids and mask are row-major
// [rows, seq] (padding anywhere, mask 0 there; positions come from the
// cumulative sum of the mask, so left- and right-padded rows both work).
// It returns the logits [rows, n, vocab] of the n positions pos[r·n+k]
// (each in [0, seq)) of every row r, as one row-major slice: the output
// head runs on those positions only.
//
// This is the low-level forward that uncached generation uses (helper
// code in generate*.go may call it). The caller must hold m.mu; the
// returned slice is m's buffer and is overwritten by the next forward call,
// so copy what must outlive it. ids, mask and pos are read during the call
// only.
func (m *Model) forward(ids, mask []int64, rows, seq int, pos []int64, n int) ([]float32, error) {
	if err := m.checkCausal(ids, mask, rows, seq); err != nil {
		return nil, err
	}
	out, err := m.run(rows, seq, []namedInput{{"input_ids", ids, seq}, {"attention_mask", mask, seq}}, pos, nil, n)
	return out.logits, err
}

// checkCausal checks a causal model's batch before a forward run.
func (m *Model) checkCausal(ids, mask []int64, rows, seq int) error {
	if m.seq2seq {
		return errors.New("forward: a seq2seq model needs forwardSeq2Seq")
	}
	if m.mlm {
		return m.errMaskedLM("score log-likelihoods or perplexity")
	}
	if len(ids) != rows*seq || len(mask) != rows*seq {
		return fmt.Errorf("forward: %d ids and %d mask values for a [%d, %d] batch", len(ids), len(mask), rows, seq)
	}
	return nil
}

// forwardSeq2Seq runs an encoder-decoder model: encIDs/encMask are
// [rows, encLen], decIDs/decMask are [rows, decLen] (decoder inputs, i.e.
// the decoder start token followed by the target shifted right). It returns
// the decoder logits [rows, n, vocab] of the decoder positions pos, as
// forward does. The same rules as forward apply: the caller holds m.mu,
// the result is reused by the next call.
func (m *Model) forwardSeq2Seq(encIDs, encMask []int64, encLen int, decIDs, decMask []int64, decLen, rows int, pos []int64, n int) ([]float32, error) {
	if err := m.checkSeq2Seq(encIDs, encMask, encLen, decIDs, decMask, decLen, rows); err != nil {
		return nil, err
	}
	out, err := m.run(rows, decLen, seq2seqInputs(encIDs, encMask, encLen, decIDs, decMask, decLen), pos, nil, n)
	return out.logits, err
}

func (m *Model) checkSeq2Seq(encIDs, encMask []int64, encLen int, decIDs, decMask []int64, decLen, rows int) error {
	if !m.seq2seq {
		return errors.New("forwardSeq2Seq: the model is not seq2seq")
	}
	if len(encIDs) != rows*encLen || len(encMask) != rows*encLen || len(decIDs) != rows*decLen || len(decMask) != rows*decLen {
		return fmt.Errorf("forwardSeq2Seq: input sizes do not match [%d, %d] and [%d, %d]", rows, encLen, rows, decLen)
	}
	return nil
}

func seq2seqInputs(encIDs, encMask []int64, encLen int, decIDs, decMask []int64, decLen int) []namedInput {
	return []namedInput{
		{"input_ids", encIDs, encLen}, {"attention_mask", encMask, encLen},
		{"decoder_input_ids", decIDs, decLen}, {"decoder_attention_mask", decMask, decLen},
	}
}

type namedInput struct {
	name string
	data []int64
	cols int
}

// forwardSession returns the forward graph's session, opening it on
// first use. The caller holds m.mu.
func (m *Model) forwardSession() (*ort.Session, error) {
	if m.closed {
		return nil, errClosed
	}
	if m.sess != nil {
		return m.sess, nil
	}
	var err error
	if m.sess, err = ort.NewSessionFromBytes(m.fwdGraph, m.fwdOpts); err != nil {
		return nil, err
	}
	m.fwdGraph = nil
	return m.sess, nil
}

// errClosed is what a Model returns after Close.
var errClosed = errors.New("eval: the model is closed")

// runOut is what one forward run returns: logits [rows, n, vocab] for a
// run without targets, else each position's log-probability of its
// target and its argmax, [rows, n] each. The slices are m's buffers.
type runOut struct {
	logits, logp []float32
	argmax       []int64
}

// run binds the inputs and runs the forward session once, reading the n
// positions pos[r·n+k] (each in [0, seq)) of every row r: with target nil
// their logits, else (target [rows, n], token ids) the scores of the
// targets there. A target outside the vocabulary is scored as token 0:
// the caller gives it no probability.
func (m *Model) run(rows, seq int, inputs []namedInput, pos, target []int64, n int) (runOut, error) {
	sess, err := m.forwardSession()
	if err != nil {
		return runOut{}, err
	}
	if len(pos) != rows*n || target != nil && len(target) != rows*n {
		return runOut{}, fmt.Errorf("forward: %d positions and %d targets for %d rows of %d", len(pos), len(target), rows, n)
	}
	f := &m.fwd
	r := &f.logitsRun
	if target != nil {
		r = &f.scoreRun
	}
	if r.bind == nil {
		if r.bind, err = sess.NewBinding(); err != nil {
			return runOut{}, err
		}
	}
	// The previous run's tensors go first: they may hold the buffers
	// replaced below.
	r.release()
	f.index, f.target = grow(f.index, rows*n), grow(f.target, rows*n)
	for i, p := range pos {
		if p < 0 || p >= int64(seq) {
			return runOut{}, fmt.Errorf("forward: position %d outside a sequence of %d", p, seq)
		}
		f.index[i] = int64(i/n*seq) + p
		if target != nil && target[i] >= 0 && target[i] < int64(m.vocab) {
			f.target[i] = target[i]
		}
	}
	fail := func(err error) (runOut, error) {
		r.release()
		return runOut{}, err
	}
	bindIn := func(name string, data []int64, shape ...int64) error {
		t, err := ort.NewTensor(data, shape...)
		if err != nil {
			return err
		}
		r.bound = append(r.bound, t)
		return r.bind.BindInput(name, t)
	}
	for _, in := range inputs {
		if err := bindIn(in.name, in.data, int64(rows), int64(in.cols)); err != nil {
			return fail(err)
		}
	}
	if err := bindIn(scoreIndex, f.index, int64(rows), int64(n)); err != nil {
		return fail(err)
	}
	if err := bindIn(scoreTarget, f.target, int64(rows), int64(n), 1); err != nil {
		return fail(err)
	}
	var out runOut
	if target == nil {
		f.logits = growTo(f.logits, rows*n*m.vocab)
		out.logits = f.logits
		err = bindOut(r, "logits", out.logits, int64(rows), int64(n), int64(m.vocab))
	} else {
		f.logp, f.argmax = growTo(f.logp, rows*n), growTo(f.argmax, rows*n)
		out.logp, out.argmax = f.logp, f.argmax
		if err = bindOut(r, scoreLogProb, out.logp, int64(rows), int64(n), 1); err == nil {
			err = bindOut(r, scoreArgmax, out.argmax, int64(rows), int64(n), 1)
		}
	}
	if err != nil {
		return fail(err)
	}
	if err := r.bind.Run(); err != nil {
		return runOut{}, err
	}
	return out, nil
}

// bindOut binds data, shaped, to the output name of r's binding.
func bindOut[T float32 | int64](r *boundRun, name string, data []T, shape ...int64) error {
	t, err := ort.NewTensor(data, shape...)
	if err != nil {
		return err
	}
	r.bound = append(r.bound, t)
	return r.bind.BindOutput(name, t)
}

// growTo returns s with length n, reallocated when it is too short; the
// contents are not kept.
func growTo[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n:n]
}
