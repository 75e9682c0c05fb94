// Package data turns data files into training batches: JSON lines and JSON
// arrays of instruction, classification or plain-text records, tokenized,
// labelled for the model's objective (causal LM, seq2seq, MLM,
// classification), truncated, padded and batched.
package data

// IgnoreIndex marks label positions that do not count in the loss.
const IgnoreIndex = -100

// Batch is one training batch, row-major, in the layout train.onnx takes.
type Batch struct {
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
}

// Feeds lists the batch's graph inputs by name with their shapes.
func (b *Batch) Feeds() map[string]Feed {
	f := map[string]Feed{
		"input_ids":      {b.InputIDs, []int64{int64(b.Size), int64(b.SeqLen)}},
		"attention_mask": {b.AttentionMask, []int64{int64(b.Size), int64(b.SeqLen)}},
	}
	switch {
	case b.TgtLen > 0:
		f["labels"] = Feed{b.Labels, []int64{int64(b.Size), int64(b.TgtLen)}}
		f["decoder_input_ids"] = Feed{b.DecoderInputIDs, []int64{int64(b.Size), int64(b.TgtLen)}}
		f["decoder_attention_mask"] = Feed{b.DecoderAttentionMask, []int64{int64(b.Size), int64(b.TgtLen)}}
	case len(b.Labels) == b.Size:
		f["labels"] = Feed{b.Labels, []int64{int64(b.Size)}}
	default:
		f["labels"] = Feed{b.Labels, []int64{int64(b.Size), int64(b.SeqLen)}}
	}
	return f
}

// Feed is one int64 graph input: its values and shape.
type Feed struct {
	Values []int64
	Shape  []int64
}
