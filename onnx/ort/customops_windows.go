package ort

import (
	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/internal/badinput"
)

// registerCustomOps is not implemented on Windows: migu's kernel library is
// built for Linux and macOS only.
func registerCustomOps(_ *ortgo.SessionOptions, path string) error {
	return badinput.Errorf("custom-op library %s: custom operators are not supported on Windows", path)
}

// LibraryString is not implemented on Windows, where migu's kernel
// libraries are not built.
func LibraryString(path, _ string) (string, bool, error) {
	return "", false, badinput.Errorf("custom-op library %s: custom operators are not supported on Windows", path)
}
