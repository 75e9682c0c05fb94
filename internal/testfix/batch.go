package testfix

// TinyBatch is the padded two-row batch that tests feed a tiny model of
// arch (llama, t5 or roberta): token ids, the attention mask (the second
// row padded), labels with -100 where no loss is taken (the causal labels
// are the ids, the masked-LM ones a few positions), and for t5 the
// decoder's ids and mask. Each call returns fresh slices.
func TinyBatch(arch string) map[string][][]int64 {
	feeds := map[string][][]int64{
		"input_ids":      {{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, 1, 1}},
		"attention_mask": {{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}},
	}
	switch arch {
	case "llama":
		feeds["labels"] = [][]int64{{5, 9, 12, 3, 7, 20}, {4, 8, 31, 6, -100, -100}}
	case "roberta":
		feeds["labels"] = [][]int64{{-100, 9, -100, 3, -100, -100}, {4, -100, -100, 6, -100, -100}}
	case "t5":
		feeds["decoder_input_ids"] = [][]int64{{0, 7, 9, 2}, {0, 5, 1, 0}}
		feeds["decoder_attention_mask"] = [][]int64{{1, 1, 1, 1}, {1, 1, 1, 0}}
		feeds["labels"] = [][]int64{{7, 9, 2, 1}, {5, 1, 2, -100}}
	default:
		panic("testfix.TinyBatch: no batch for architecture " + arch)
	}
	return feeds
}

// WithoutLabels returns feeds without the labels, which forward graphs do
// not take.
func WithoutLabels(feeds map[string][][]int64) map[string][][]int64 {
	out := make(map[string][][]int64, len(feeds))
	for k, v := range feeds {
		if k != "labels" {
			out[k] = v
		}
	}
	return out
}
