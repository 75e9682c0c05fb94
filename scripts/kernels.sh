#!/usr/bin/env bash
# Builds migu's fused-kernel library (onnx/kernels/csrc) into OUT (default
# bin/libmigu_kernels.so) with the system C compiler, against the ONNX
# Runtime C API header that onnxruntime_go vendors. Portable code: -O3 for
# x86-64's baseline, with AVX2 and AVX-512 clones of the hot loops chosen at
# load time (GCC's target_clones), never -march=native. Prints the
# library's path; a library newer than its source is kept as it is.
set -euo pipefail
. "$(dirname "$0")/csrc.sh"

csrc_start kernels migu_kernels.c libmigu_kernels.so "${1:-}"
csrc_need_cc "install gcc, or run without fused kernels (MIGU_KERNELS=off)"
csrc_build -ffp-contract=off -Wno-psabi -- -lm -lpthread
