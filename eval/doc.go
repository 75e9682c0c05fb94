// Package eval scores models the way lm-evaluation-harness does: the
// log-likelihood of a continuation given a context through the ONNX forward
// graph (causal and seq2seq), multiple-choice tasks as data (HellaSwag,
// ARC-Challenge, Winogrande) with shared scoring (acc, acc_norm and their
// standard errors), perplexity over text files, suites of tasks and the
// comparison of two models. Generation, HumanEval and continual-learning
// accuracy live beside them and share the Model type.
package eval
