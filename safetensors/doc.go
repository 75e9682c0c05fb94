// Package safetensors reads and writes the Hugging Face safetensors format:
// an 8-byte little-endian header length, a JSON header naming every tensor's
// dtype, shape and byte range, then the raw little-endian tensor data.
//
// Open memory-maps one file and validates its header strictly, so a
// truncated or hand-edited checkpoint fails at open time with an error that
// names the file and the tensor, instead of producing garbage weights later.
// OpenDir and OpenIndex present a sharded Hugging Face checkpoint
// (model.safetensors.index.json) as one set of tensors. Write and Create
// write files in the reference layout (tensors ordered by dtype alignment,
// then name; header padded with spaces to 8 bytes) through a temporary file
// that is renamed into place only when complete.
//
// Every error about the content of a file matches ErrFormat (errors.Is), is
// a *FormatError (errors.As), and is marked as bad input for the CLI.
package safetensors
