package tokenizer

// minHeap is a binary heap whose top is the element that comes first under
// before; BPE encoding (merges by rank) and BPE training (pairs by count)
// both use it.
type minHeap[T any] struct {
	items  []T
	before func(a, b T) bool
}

func newMinHeap[T any](capacity int, before func(a, b T) bool) *minHeap[T] {
	return &minHeap[T]{items: make([]T, 0, capacity), before: before}
}

func (h *minHeap[T]) len() int { return len(h.items) }

func (h *minHeap[T]) push(x T) {
	h.items = append(h.items, x)
	s := h.items
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.before(s[i], s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *minHeap[T]) pop() T {
	s := h.items
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, r, first := 2*i+1, 2*i+2, i
		if l < n && h.before(s[l], s[first]) {
			first = l
		}
		if r < n && h.before(s[r], s[first]) {
			first = r
		}
		if first == i {
			break
		}
		s[i], s[first] = s[first], s[i]
		i = first
	}
	h.items = s
	return top
}
