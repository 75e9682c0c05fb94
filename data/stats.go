package data

import "fmt"

// Stats describe a prepared dataset for reports.
type Stats struct {
	Examples  int `json:"examples"`
	Skipped   int `json:"skipped"`   // bad records skipped (ReadOptions.SkipBadLines)
	Truncated int `json:"truncated"` // examples cut to MaxLen or MaxTargetLen
	// AnswerCut counts the truncated examples that lost answer tokens
	// (assistant turns, targets): some of what they teach is missing.
	AnswerCut int `json:"answer_cut"`
	// Tokens counts the input tokens after truncation (encoder and decoder
	// for seq2seq), padding excluded.
	Tokens int `json:"tokens"`
	// TargetTokens counts the tokens the loss can be taken on: clm answer
	// tokens (after the graph's shift), seq2seq targets, the tokens MLM may
	// choose from (about MLMProbability of them are chosen each epoch), one
	// per cls example.
	TargetTokens int `json:"target_tokens"`
	// Longest is the longest example in tokens.
	Longest int `json:"longest"`
}

func (s Stats) String() string {
	return fmt.Sprintf("%d examples (%d truncated, %d bad records skipped), %d tokens, %d target tokens, longest %d, %d with answer tokens cut",
		s.Examples, s.Truncated, s.Skipped, s.Tokens, s.TargetTokens, s.Longest, s.AnswerCut)
}

// statsOf counts what Encode produced.
func statsOf(ex *Examples, ds *Dataset) Stats {
	s := Stats{Examples: len(ex.Items), Skipped: ds.Skipped}
	special := specialSet(ex.Config.Specials)
	for _, it := range ex.Items {
		n := len(it.InputIDs) + len(it.Target)
		s.Tokens += n
		s.Longest = max(s.Longest, len(it.InputIDs), len(it.Target))
		if it.Truncated {
			s.Truncated++
		}
		if it.AnswerCut {
			s.AnswerCut++
		}
		switch ex.Config.Objective {
		case CLM:
			if it.LossMask == nil {
				s.TargetTokens += max(len(it.InputIDs)-max(it.PromptLen, 1), 0)
				break
			}
			for _, m := range it.LossMask[min(1, len(it.LossMask)):] {
				s.TargetTokens += btoi(m)
			}
		case Seq2Seq:
			s.TargetTokens += len(it.Target)
		case MLM:
			for _, id := range it.InputIDs {
				if !special.has(id) {
					s.TargetTokens++
				}
			}
		case CLS:
			s.TargetTokens++
		}
	}
	return s
}
