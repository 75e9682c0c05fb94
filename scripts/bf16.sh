#!/usr/bin/env bash
# Builds migu's bfloat16 matrix products (onnx/kernels/csrc/migu_bf16.c)
# into OUT (default bin/libmigu_bf16.so) against oneDNN (Debian's
# libdnnl-dev) and the ONNX Runtime C API header that onnxruntime_go
# vendors. oneDNN is optional: without its headers this prints why on
# stderr and exits 1, and migu trains in float32 only (--precision bf16
# then says the library is missing). Prints the library's path; a library
# newer than its source is kept as it is.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bin/libmigu_bf16.so}
cc=${CC:-cc}
go=${GO:-go}

src=$root/onnx/kernels/csrc/migu_bf16.c
if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "$root/onnx/kernels/csrc/ort_op.h" && "$out" -nt "$0" ]]; then
	echo "$out"
	exit 0
fi
command -v "$cc" >/dev/null || { echo "bf16: no C compiler ($cc): install gcc" >&2; exit 1; }
echo '#include <oneapi/dnnl/dnnl.h>' | "$cc" -E -x c - >/dev/null 2>&1 ||
	{ echo "bf16: oneDNN headers not found (apt-get install libdnnl-dev): bf16 matrix products not built" >&2; exit 1; }
hdr=$(cd "$root" && "$go" list -m -f '{{.Dir}}' github.com/yalue/onnxruntime_go)
[[ -f "$hdr/onnxruntime_c_api.h" ]] || { echo "bf16: onnxruntime_c_api.h not found in $hdr (run go mod download)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$cc" -std=c11 -D_GNU_SOURCE -O3 -fno-math-errno -fPIC -shared -fvisibility=hidden \
	-Wall -Wextra -I"$hdr" -o "$tmp" "$src" -ldnnl -lgomp -lpthread
mv "$tmp" "$out"
trap - EXIT
echo "$out"
