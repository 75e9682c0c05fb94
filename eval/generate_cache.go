package eval

import (
	"fmt"
	"runtime/debug"

	"google.golang.org/protobuf/proto"

	"github.com/migu-ml/migu/kvcache"
	"github.com/migu-ml/migu/onnx"
	"github.com/migu-ml/migu/onnx/ort"
)

// generator holds the key/value-cache sessions of a Model, built from the
// model folder on the first cached generation: a decoder with past for
// Llama-style models, plus an encoder that returns the cross-attention
// keys and values for T5.
type generator struct {
	opts ort.SessionOptions
	// rewrites are applied to the graphs before their sessions start
	// (kernels.go).
	rewrites rewrites
	enc      *ort.Session // seq2seq only
	sess     *ort.Session
	cache    *kvcache.Cache
	err      error          // a failed build is not retried
	fused    map[string]int // what rewrite replaced in the decoder (and encoder)
	// Output positions: the decoder's logits and per layer present key
	// and value; the encoder's cross keys and values.
	logitsAt, crossAt int
	// scored: the causal decoder has the scoring input and outputs
	// (addScoring), which shared-context scoring reads instead of its
	// logits.
	scored         bool
	keyAt, valueAt []int
	crossKeyAt     []int
	crossValueAt   []int
	// kv is shared-context scoring's cache memory (loglik_shared.go).
	kv kvBuffers
}

// load builds the cached graphs of dir (once), through the builder its
// architecture registered with kvcache.
func (g *generator) load(dir, architecture string, seq2seq bool) error {
	if g.sess != nil || g.err != nil {
		return g.err
	}
	g.err = func() error {
		graphs, err := kvcache.Build(dir, architecture)
		if err != nil {
			return err
		}
		if (graphs.Encoder != nil) != seq2seq {
			return fmt.Errorf("%s: the %s key/value-cache graphs do not fit the model's objective", dir, architecture)
		}
		encoder, decoder, cache := graphs.Encoder, graphs.Decoder, graphs.Cache
		defer decoder.Close()
		if encoder != nil {
			defer encoder.Close()
		} else if err := addScoring(decoder, true); err != nil {
			return fmt.Errorf("%s: the key/value-cache decoder: %w", dir, err)
		}
		sess, at, err := g.session(decoder)
		if err != nil {
			return err
		}
		g.logitsAt = at["logits"]
		for i := range cache.Layers {
			g.keyAt = append(g.keyAt, at[cache.PresentKey[i]])
			g.valueAt = append(g.valueAt, at[cache.PresentValue[i]])
		}
		if encoder != nil {
			enc, encAt, err := g.session(encoder)
			if err != nil {
				sess.Close()
				return err
			}
			for i := range cache.Layers {
				g.crossKeyAt = append(g.crossKeyAt, encAt[cache.CrossKey[i]])
				g.crossValueAt = append(g.crossValueAt, encAt[cache.CrossValue[i]])
			}
			g.enc = enc
		}
		g.sess, g.cache, g.scored = sess, cache, encoder == nil
		return nil
	}()
	// Weights a builder read into the graph (a folder that keeps them
	// inline) were copied into the session: give their Go copies back to
	// the system rather than keep them as free heap.
	debug.FreeOSMemory()
	return g.err
}

// session loads an in-memory graph and maps its output names to
// positions. It applies g.rewrites to the graph first. A
// graph whose weights are external data in its folder (m.Dir) is loaded
// with that folder as the session's ExternalDataDir, so that ORT reads
// them from there, as for the forward graph (forwardModel).
func (g *generator) session(m *onnx.Model) (*ort.Session, map[string]int, error) {
	counts, err := rewrite(m, g.rewrites)
	if err != nil {
		return nil, nil, fmt.Errorf("rewriting the key/value-cache graph: %w", err)
	}
	for k, n := range counts {
		if g.fused == nil {
			g.fused = map[string]int{}
		}
		g.fused[k] += n
	}
	raw, err := proto.Marshal(m.Proto)
	if err != nil {
		return nil, nil, fmt.Errorf("serializing the key/value-cache graph: %w", err)
	}
	opts := g.opts
	opts.ExternalDataDir = m.Dir
	sess, err := ort.NewSessionFromBytes(raw, opts)
	if err != nil {
		return nil, nil, err
	}
	at := map[string]int{}
	for i, o := range sess.Outputs() {
		at[o.Name] = i
	}
	return sess, at, nil
}

// close releases the sessions; closing twice is harmless.
func (g *generator) close() {
	for _, s := range []**ort.Session{&g.sess, &g.enc} {
		if *s != nil {
			(*s).Close()
			*s = nil
		}
	}
}

// cachedStepper feeds only the new tokens each step, with the keys and
// values of the earlier ones from the previous step's present outputs.
// For seq2seq models the prompt goes through the encoder once and the
// decoder starts from the decoder start token.
type cachedStepper struct {
	m       *Model
	g       *generator
	seq2seq bool
	rows    int
	mask    []int64     // causal: prompt + generated; seq2seq: the encoder's
	seq     int         // causal: positions so far; seq2seq: decoder positions so far
	past    []ort.Value // per layer key, value: the last step's presents
	// buf and ctxSeq: shared-context scoring's presents of its context
	// run and their length (contexts, expand).
	buf    *kvBuffers
	ctxSeq int
	cross  []ort.Value // seq2seq: per layer cross key, value
	last   []float32
}

func (c *cachedStepper) first(ids, mask []int64, rows, seq int) ([]float32, error) {
	c.rows, c.mask, c.seq = rows, mask, seq
	cache := c.g.cache
	for range 2 * cache.Layers {
		z, err := ort.Zeros[float32](int64(rows), int64(cache.KVHeads), 0, int64(cache.HeadDim))
		if err != nil {
			return nil, err
		}
		c.past = append(c.past, z)
	}
	if !c.seq2seq {
		return c.run(ids, seq)
	}
	idT, err := ort.NewTensor(ids, int64(rows), int64(seq))
	if err != nil {
		return nil, err
	}
	defer idT.Close()
	maskT, err := ort.NewTensor(mask, int64(rows), int64(seq))
	if err != nil {
		return nil, err
	}
	defer maskT.Close()
	outs, err := c.g.enc.Run(map[string]ort.Value{"input_ids": idT, "attention_mask": maskT})
	if err != nil {
		return nil, err
	}
	c.cross = outs
	start := make([]int64, rows)
	for r := range start {
		start[r] = c.m.decoderStart()
	}
	c.seq = 1
	return c.run(start, 1)
}

func (c *cachedStepper) next(tokens []int64) ([]float32, error) {
	if c.seq >= c.m.maxLen {
		return nil, fmt.Errorf("generation reached the context length %d", c.m.maxLen)
	}
	if !c.seq2seq {
		c.mask = appendColumn(c.mask, c.rows, c.seq, nil)
	}
	c.seq++
	return c.run(tokens, 1)
}

// run feeds newLen tokens per row and keeps the presents as the next past;
// it returns the logits of each row's last position ([rows, vocab]).
func (c *cachedStepper) run(ids []int64, newLen int) ([]float32, error) {
	idT, err := ort.NewTensor(ids, int64(c.rows), int64(newLen))
	if err != nil {
		return nil, err
	}
	defer idT.Close()
	maskT, err := ort.NewTensor(c.mask, int64(c.rows), int64(len(c.mask)/c.rows))
	if err != nil {
		return nil, err
	}
	defer maskT.Close()
	cache := c.g.cache
	in := map[string]ort.Value{"attention_mask": maskT}
	if c.seq2seq {
		in["decoder_input_ids"] = idT
		for i := range cache.Layers {
			in[cache.CrossKey[i]], in[cache.CrossValue[i]] = c.cross[c.g.crossKeyAt[i]], c.cross[c.g.crossValueAt[i]]
		}
	} else {
		in["input_ids"] = idT
	}
	for i := range cache.Layers {
		in[cache.PastKey[i]], in[cache.PastValue[i]] = c.past[2*i], c.past[2*i+1]
	}
	if !c.seq2seq {
		nT, err := ort.NewTensor([]int64{1}, 1)
		if err != nil {
			return nil, err
		}
		defer nT.Close()
		in[kvcache.LogitsLen] = nT
	}
	if c.g.scored {
		// Each row's one position; any token: these scores are not read.
		index, err := ort.NewTensor(rowIndex(c.rows), int64(c.rows), 1)
		if err != nil {
			return nil, err
		}
		defer index.Close()
		tT, err := ort.NewTensor(make([]int64, c.rows), int64(c.rows), 1, 1)
		if err != nil {
			return nil, err
		}
		defer tT.Close()
		in[scoreIndex], in[scoreTarget] = index, tT
	}
	outs, err := c.g.sess.Run(in)
	if err != nil {
		return nil, err
	}
	for _, v := range c.past {
		v.Close()
	}
	c.past = c.past[:0]
	kept := map[int]bool{}
	for i := range cache.Layers {
		c.past = append(c.past, outs[c.g.keyAt[i]], outs[c.g.valueAt[i]])
		kept[c.g.keyAt[i]], kept[c.g.valueAt[i]] = true, true
	}
	for i, v := range outs {
		if !kept[i] {
			defer v.Close()
		}
	}
	logits := outs[c.g.logitsAt]
	t, ok := logits.(*ort.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("the cached decoder's logits are %v, not float32", logits.DType())
	}
	c.last = append(c.last[:0], t.Data()...)
	return c.last, nil
}

// rowIndex is the scoreIndex of a run that reads the one last position of
// each of rows rows: 0, 1, …, rows−1.
func rowIndex(rows int) []int64 {
	index := make([]int64, rows)
	for r := range index {
		index[r] = int64(r)
	}
	return index
}

// score feeds newLen new tokens per row, as run does, and returns the
// log-probabilities of the tokens target at the positions index and
// those positions' argmaxes (one each per position, in index's order),
// computed in the graph (addScoring): neither the logits nor the
// presents, which the binding leaves unbound, are copied out. index
// counts row·newLen + position into the new positions, so that the head
// runs on the positions asked for alone, not on a row's padding. The
// past stays as it was; the caller runs no step after this one. The
// slices are new.
func (c *cachedStepper) score(ids []int64, newLen int, index, target []int64) (runOut, error) {
	if !c.g.scored {
		return runOut{}, fmt.Errorf("the key/value-cache decoder has no scoring outputs")
	}
	b, err := c.g.sess.NewBinding()
	if err != nil {
		return runOut{}, err
	}
	defer b.Close()
	var vals []ort.Value
	defer func() {
		for _, v := range vals {
			v.Close()
		}
	}()
	tgt := make([]int64, len(target))
	for i, t := range target {
		if t >= 0 && t < int64(c.m.vocab) {
			tgt[i] = t
		}
	}
	n := int64(len(index))
	res := runOut{logp: make([]float32, n), argmax: make([]int64, n)}
	cache := c.g.cache
	for _, err := range []error{
		bindTensor(b, &vals, "input_ids", false, ids, int64(c.rows), int64(newLen)),
		bindTensor(b, &vals, "attention_mask", false, c.mask, int64(c.rows), int64(len(c.mask)/c.rows)),
		bindTensor(b, &vals, kvcache.LogitsLen, false, []int64{int64(newLen)}, 1),
		bindTensor(b, &vals, scoreIndex, false, index, 1, n),
		bindTensor(b, &vals, scoreTarget, false, tgt, 1, n, 1),
		bindTensor(b, &vals, scoreLogProb, true, res.logp, 1, n, 1),
		bindTensor(b, &vals, scoreArgmax, true, res.argmax, 1, n, 1),
	} {
		if err != nil {
			return runOut{}, err
		}
	}
	for i := range cache.Layers {
		if err := b.BindInput(cache.PastKey[i], c.past[2*i]); err != nil {
			return runOut{}, err
		}
		if err := b.BindInput(cache.PastValue[i], c.past[2*i+1]); err != nil {
			return runOut{}, err
		}
	}
	if err := b.Run(); err != nil {
		return runOut{}, err
	}
	return res, nil
}

// bindTensor binds data, shaped, to the input or output name of b, and
// adds the tensor to vals, which the caller closes after the run.
func bindTensor[T float32 | int64](b *ort.Binding, vals *[]ort.Value, name string, out bool, data []T, shape ...int64) error {
	t, err := ort.NewTensor(data, shape...)
	if err != nil {
		return err
	}
	*vals = append(*vals, t)
	if out {
		return b.BindOutput(name, t)
	}
	return b.BindInput(name, t)
}

func (c *cachedStepper) keep(rows []int) error {
	c.mask = keepRows(c.mask, c.rows, rows)
	if c.seq2seq {
		if err := keepTensorRows(c.cross, c.rows, rows); err != nil {
			return err
		}
	}
	if err := keepTensorRows(c.past, c.rows, rows); err != nil {
		return err
	}
	c.rows = len(rows)
	return nil
}

// keepTensorRows replaces each float32 tensor of [n, …] by the given rows
// of its first axis, closing the old one.
func keepTensorRows(vals []ort.Value, n int, rows []int) error {
	for i, v := range vals {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			return fmt.Errorf("cache tensor is %v, not float32", v.DType())
		}
		shape := t.Shape()
		shape[0] = int64(len(rows))
		kept, err := ort.NewTensor(keepRows(t.Data(), n, rows), shape...)
		if err != nil {
			return err
		}
		t.Close()
		vals[i] = kept
	}
	return nil
}

func (c *cachedStepper) close() {
	for _, v := range append(c.past, c.cross...) {
		v.Close()
	}
	c.past, c.cross = nil, nil
}
