#!/usr/bin/env bash
# Builds migu's bfloat16 matrix products (onnx/kernels/csrc/migu_bf16.c)
# into OUT (default bin/libmigu_bf16.so) against oneDNN (Debian's
# libdnnl-dev) and the ONNX Runtime C API header that onnxruntime_go
# vendors. oneDNN is optional: without its headers this prints why on
# stderr and exits 1, and migu trains in float32 only (--precision bf16
# then says the library is missing). Prints the library's path; a library
# newer than its source is kept as it is.
set -euo pipefail
. "$(dirname "$0")/csrc.sh"

csrc_start bf16 migu_bf16.c libmigu_bf16.so "${1:-}"
csrc_need_cc "install gcc"
echo '#include <oneapi/dnnl/dnnl.h>' | "$cc" -E -x c - >/dev/null 2>&1 ||
	csrc_fail "oneDNN headers not found (apt-get install libdnnl-dev): bf16 matrix products not built"
csrc_build -- -ldnnl -lgomp -lpthread
