// Package data turns data files into training batches: JSON lines and JSON
// arrays of instruction, classification or plain-text records, tokenized,
// labelled for the model's objective (causal LM, seq2seq, MLM,
// classification), truncated, padded and batched.
//
// The steps, each usable alone:
//
//	ds, err := data.Read(path, data.ReadOptions{})         // records
//	enc, err := data.NewEncoder(tok, data.ConfigFor(man))  // tokenizer + objective
//	ex, err := enc.Encode(ds)                              // examples and statistics
//	ld, err := data.NewLoader(ex, data.BatchOptions{BatchSize: 8, Seed: 1})
//	for b, err := ld.Next(); err != io.EOF; b, err = ld.Next() { … }
//
// A Loader's State (epoch, batch, seed) resumes an interrupted run on
// exactly the batches it would have seen.
package data

// IgnoreIndex marks label positions that do not count in the loss.
const IgnoreIndex = -100

// Batch is one training batch, row-major, in the layout train.onnx takes.
type Batch struct {
	// Objective says how to read Labels; empty in hand-made batches, where
	// Feeds infers it from the shapes.
	Objective Objective

	Size   int // rows
	SeqLen int // encoder / decoder-only sequence length
	TgtLen int // seq2seq decoder length (0 otherwise)

	InputIDs      []int64 // [Size, SeqLen]
	AttentionMask []int64 // [Size, SeqLen], 1 for tokens, 0 for padding
	// Labels are [Size, SeqLen] for clm (aligned with InputIDs; the graph
	// shifts them) and mlm, [Size, TgtLen] for seq2seq, [Size] for cls;
	// IgnoreIndex where no loss is taken.
	Labels []int64
	// DecoderInputIDs and DecoderAttentionMask feed a seq2seq decoder:
	// [Size, TgtLen], the labels shifted right behind the start token.
	DecoderInputIDs      []int64
	DecoderAttentionMask []int64

	// Tokens counts the real (unpadded) input tokens, for throughput.
	Tokens int
	// LossTokens counts the positions the loss is taken on (for clm after
	// the graph's shift, so position 0 never counts); a trainer that
	// accumulates gradients can weight micro-batches by it.
	LossTokens int
	// Items[r] is the index of row r's example in Examples.Items (and of
	// its record in Dataset.Records), so evaluation can map rows back.
	Items []int
}

// Feeds lists the batch's graph inputs by name with their shapes.
func (b *Batch) Feeds() map[string]Feed {
	size, seq, tgt := int64(b.Size), int64(b.SeqLen), int64(b.TgtLen)
	f := map[string]Feed{
		"input_ids":      {b.InputIDs, []int64{size, seq}},
		"attention_mask": {b.AttentionMask, []int64{size, seq}},
	}
	switch b.objective() {
	case Seq2Seq:
		f["labels"] = Feed{b.Labels, []int64{size, tgt}}
		f["decoder_input_ids"] = Feed{b.DecoderInputIDs, []int64{size, tgt}}
		f["decoder_attention_mask"] = Feed{b.DecoderAttentionMask, []int64{size, tgt}}
	case CLS:
		f["labels"] = Feed{b.Labels, []int64{size}}
	default:
		f["labels"] = Feed{b.Labels, []int64{size, seq}}
	}
	return f
}

// objective is the batch's Objective, inferred from the shapes of a
// hand-made batch that leaves it empty.
func (b *Batch) objective() Objective {
	switch {
	case b.Objective != "":
		return b.Objective
	case b.TgtLen > 0:
		return Seq2Seq
	case len(b.Labels) == b.Size:
		return CLS
	}
	return CLM
}

// Feed is one int64 graph input: its values and shape.
type Feed struct {
	Values []int64
	Shape  []int64
}
