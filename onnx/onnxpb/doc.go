// Package onnxpb holds the protobuf types of the ONNX file format, generated
// from onnx.proto (our own schema, written from the ONNX IR specification).
// Code outside package onnx should rarely need it directly.
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative onnx.proto
