// Package ort runs ONNX graphs with ONNX Runtime through
// github.com/yalue/onnxruntime_go: it finds and loads the ORT shared
// library, opens sessions with migu's options, wraps Go slices as tensors
// without copying, and checks what a caller binds against the model's
// declared inputs and outputs so that mistakes read as sentences, not ORT
// statuses.
//
// Two ways to run a session:
//
//   - Binding: bind inputs and preallocated outputs once, then call Run
//     every step; ORT reads and writes the tensors' Go memory in place and
//     Run allocates nothing in Go. This is the training path.
//   - Session.Run: pass inputs by name and get outputs that ORT allocated
//     and onnxruntime_go copied into Go memory, for evaluation code whose
//     output shapes vary.
//
// Limits inherited from onnxruntime_go v1.27.0: tensors always live in CPU
// memory (with CUDA, ORT copies inputs and outputs across every run); rank-0
// tensors cannot be created, so graphs exchange scalars as shape [1]
// (ErrScalar); string and non-tensor graph inputs are not supported here.
package ort
