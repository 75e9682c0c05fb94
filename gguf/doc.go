// Package gguf reads and writes GGUF files, the format of llama.cpp and
// ollama: a header, typed metadata (general.architecture, tokenizer.ggml.*,
// …), tensor infos, then aligned tensor data, often quantized in blocks.
//
// Open memory-maps a file and validates all of it up front — counts
// against the bytes present, strings, dims, types, alignment, bounds and
// overlaps of tensor data — so that a truncated or corrupt model fails at
// open time with one line naming the file and the key or tensor, instead
// of producing garbage weights later. Every such error matches ErrFormat
// and is marked as bad input for the CLI.
//
// Dequantize and Quantize convert between float32 and the block formats;
// both reproduce llama.cpp's gguf-py (gguf.quants) bit for bit. Writer
// writes GGUF v3 files that gguf-py and llama.cpp read, streaming tensor
// data one tensor at a time through a temporary file renamed into place.
//
// Shapes: TensorInfo.Dims is in GGUF order (Dims[0] is the row length,
// varying fastest); Shape and AddTensor use row-major (numpy) order.
package gguf
