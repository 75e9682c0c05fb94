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
	opts  ort.SessionOptions
	enc   *ort.Session // seq2seq only
	sess  *ort.Session
	cache *kvcache.Cache
	err   error          // a failed build is not retried
	fused map[string]int // what kernels.Fuse replaced in the decoder (and encoder)
	// Output positions: the decoder's logits and per layer present key
	// and value; the encoder's cross keys and values.
	logitsAt, crossAt int
	keyAt, valueAt    []int
	crossKeyAt        []int
	crossValueAt      []int
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
		g.sess, g.cache = sess, cache
		return nil
	}()
	// Weights a builder read into the graph (a folder that keeps them
	// inline) were copied into the session: give their Go copies back to
	// the system rather than keep them as free heap.
	debug.FreeOSMemory()
	return g.err
}

// session loads an in-memory graph and maps its output names to
// positions. With the kernel library in opts it fuses the graph first. A
// graph whose weights are external data in its folder (m.Dir) is loaded
// with that folder as the session's ExternalDataDir, so that ORT reads
// them from there, as for the fused forward graph (fusedModel).
func (g *generator) session(m *onnx.Model) (*ort.Session, map[string]int, error) {
	if len(g.opts.CustomOps) > 0 {
		counts, err := fuse(m)
		if err != nil {
			return nil, nil, fmt.Errorf("fusing the key/value-cache graph: %w", err)
		}
		if g.fused == nil {
			g.fused = map[string]int{}
		}
		for k, n := range counts {
			g.fused[k] += n
		}
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
	cross   []ort.Value // seq2seq: per layer cross key, value
	last    []float32
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
// it returns the logits of each row's last position.
func (c *cachedStepper) run(ids []int64, newLen int) ([]float32, error) {
	return c.runLogits(ids, newLen, 0)
}

// runLogits is run returning the logits of each row's last n positions
// ([rows, n, vocab]); n 0 means 1. A seq2seq decoder returns the last
// position's alone.
func (c *cachedStepper) runLogits(ids []int64, newLen, n int) ([]float32, error) {
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
		nT, err := ort.NewTensor([]int64{int64(max(n, 1))}, 1)
		if err != nil {
			return nil, err
		}
		defer nT.Close()
		in[kvcache.LogitsLen] = nT
	}
	outs, err := c.g.sess.Run(in)
	if err != nil {
		return nil, err
	}
	for _, v := range c.past {
		v.Close()
	}
	c.past = c.past[:0]
	for i := range cache.Layers {
		c.past = append(c.past, outs[c.g.keyAt[i]], outs[c.g.valueAt[i]])
	}
	logits := outs[c.g.logitsAt]
	defer logits.Close()
	t, ok := logits.(*ort.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("the cached decoder's logits are %v, not float32", logits.DType())
	}
	c.last = append(c.last[:0], t.Data()...)
	return c.last, nil
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
