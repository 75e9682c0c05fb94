package ort

// probe is a no-op on Windows: onnxruntime_go loads the DLL itself there and
// Init reads the version from the binding afterwards.
func probe(string) (string, error) { return "", nil }
