// What migu's two kernel libraries (migu_kernels.c, migu_bf16.c) share:
// the C API version, export and vectorisation macros, TRY, and the
// OrtCustomOp callbacks that are alike in both: every output is float32, every
// output required, inputs in the provider's default memory, no variadic
// inputs or outputs, op versions 1 and up, no in-place or alias pairs.
// op_defaults puts them into an op; each library then sets the callbacks
// that are its own (kernel creation, compute, names, input types).
#ifndef MIGU_ORT_OP_H
#define MIGU_ORT_OP_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "onnxruntime_c_api.h"

// MIGU_ORT_API is the C API version both libraries ask for: onnxruntime_go's
// header is version 24 and migu loads ORT >= 1.24, which serves it.
#define MIGU_ORT_API 24

// The libraries are built with -fvisibility=hidden: only what is marked
// MIGU_EXPORT (the registration and version functions) is exported.
#define MIGU_EXPORT __attribute__((visibility("default")))

// VECTOR compiles a loop for AVX-512, AVX2 and baseline x86-64, picked at
// load time (GCC's target_clones), so one build runs on every CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR
#endif

// TRY returns a failed ORT call's status from the calling function.
#define TRY(expr)                            \
	do {                                     \
		OrtStatus *status_ = (expr);         \
		if (status_ != NULL) return status_; \
	} while (0)

static ONNXTensorElementDataType ORT_API_CALL op_float_output(const OrtCustomOp *o, size_t i) {
	(void)o;
	(void)i;
	return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

static OrtCustomOpInputOutputCharacteristic ORT_API_CALL op_required(const OrtCustomOp *o, size_t i) {
	(void)o;
	(void)i;
	return INPUT_OUTPUT_REQUIRED;
}

static OrtMemType ORT_API_CALL op_input_mem(const OrtCustomOp *o, size_t i) {
	(void)o;
	(void)i;
	return OrtMemTypeDefault;
}

static int ORT_API_CALL op_one(const OrtCustomOp *o) {
	(void)o;
	return 1;
}

static int ORT_API_CALL op_end_version(const OrtCustomOp *o) {
	(void)o;
	return INT_MAX;
}

static size_t ORT_API_CALL op_no_pairs(int **in, int **out) {
	*in = NULL;
	*out = NULL;
	return 0;
}

static void ORT_API_CALL op_release_pairs(int *in, int *out) {
	(void)in;
	(void)out;
}

// op_defaults fills o's shared callbacks, for ORT C API version version.
static void op_defaults(OrtCustomOp *o, uint32_t version) {
	o->version = version;
	o->GetOutputType = op_float_output;
	o->GetInputCharacteristic = op_required;
	o->GetOutputCharacteristic = op_required;
	o->GetInputMemoryType = op_input_mem;
	o->GetVariadicInputMinArity = op_one;
	o->GetVariadicInputHomogeneity = op_one;
	o->GetVariadicOutputMinArity = op_one;
	o->GetVariadicOutputHomogeneity = op_one;
	o->GetStartVersion = op_one;
	o->GetEndVersion = op_end_version;
	o->GetMayInplace = op_no_pairs;
	o->ReleaseMayInplace = op_release_pairs;
	o->GetAliasMap = op_no_pairs;
	o->ReleaseAliasMap = op_release_pairs;
}

#endif
