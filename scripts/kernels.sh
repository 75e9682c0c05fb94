#!/usr/bin/env bash
# Builds migu's fused-kernel library (onnx/kernels/csrc) into OUT (default
# bin/libmigu_kernels.so) with the system C compiler, against the ONNX
# Runtime C API header that onnxruntime_go vendors. Portable code: -O3 for
# x86-64's baseline, with AVX2 and AVX-512 clones of the hot loops chosen at
# load time (GCC's target_clones), never -march=native. Prints the
# library's path; a library newer than its source is kept as it is.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bin/libmigu_kernels.so}
cc=${CC:-cc}
go=${GO:-go}

src=$root/onnx/kernels/csrc/migu_kernels.c
if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "$root/onnx/kernels/csrc/ort_op.h" && "$out" -nt "$0" ]]; then
	echo "$out"
	exit 0
fi
command -v "$cc" >/dev/null || { echo "kernels: no C compiler ($cc): install gcc, or run without fused kernels (MIGU_KERNELS=off)" >&2; exit 1; }
hdr=$(cd "$root" && "$go" list -m -f '{{.Dir}}' github.com/yalue/onnxruntime_go)
[[ -f "$hdr/onnxruntime_c_api.h" ]] || { echo "kernels: onnxruntime_c_api.h not found in $hdr (run go mod download)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$cc" -std=c11 -D_GNU_SOURCE -O3 -ffp-contract=off -fno-math-errno -fPIC -shared -fvisibility=hidden \
	-Wall -Wextra -Wno-psabi -I"$hdr" -o "$tmp" "$src" -lm -lpthread
mv "$tmp" "$out"
trap - EXIT
echo "$out"
