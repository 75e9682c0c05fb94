package data

// Rows returns rows [lo, hi) of the batch as a batch of its own, padded as
// the whole batch is, with its token counts recounted (a data-parallel
// rank's share of a global batch).
func (b *Batch) Rows(lo, hi int) *Batch {
	obj := b.objective()
	labelWidth := b.SeqLen
	switch obj {
	case Seq2Seq:
		labelWidth = b.TgtLen
	case CLS:
		labelWidth = 1
	}
	part := func(v []int64, width int) []int64 {
		if v == nil {
			return nil
		}
		return v[lo*width : hi*width]
	}
	s := &Batch{Objective: b.Objective, Size: hi - lo, SeqLen: b.SeqLen, TgtLen: b.TgtLen,
		InputIDs: part(b.InputIDs, b.SeqLen), AttentionMask: part(b.AttentionMask, b.SeqLen), Labels: part(b.Labels, labelWidth),
		DecoderInputIDs: part(b.DecoderInputIDs, b.TgtLen), DecoderAttentionMask: part(b.DecoderAttentionMask, b.TgtLen)}
	if b.Items != nil {
		s.Items = b.Items[lo:hi]
	}
	for _, m := range s.AttentionMask {
		s.Tokens += int(m)
	}
	for i, l := range s.Labels {
		// A causal LM's labels are shifted in the graph: a row's first
		// label predicts nothing.
		if l != IgnoreIndex && (obj != CLM || i%b.SeqLen > 0) {
			s.LossTokens++
		}
	}
	return s
}
