# Sourced by scripts/kernels.sh and scripts/bf16.sh, which each build one
# library of onnx/kernels/csrc the same way: the same paths and up-to-date
# check, the same compiler and ONNX Runtime header checks, the same common
# flags and an atomic rename into place. Not run on its own.

# csrc_start NAME SOURCE LIBRARY [OUT] sets name (for messages), root, src
# (onnx/kernels/csrc/SOURCE), out (OUT, default bin/LIBRARY), cc and go;
# it prints out and exits 0 when out is newer than its source, ort_op.h,
# the calling script and this file.
csrc_start() {
	name=$1
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	src=$root/onnx/kernels/csrc/$2
	out=${4:-$root/bin/$3}
	cc=${CC:-cc}
	go=${GO:-go}
	if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt "$root/onnx/kernels/csrc/ort_op.h" && "$out" -nt "$0" && "$out" -nt "${BASH_SOURCE[0]}" ]]; then
		echo "$out"
		exit 0
	fi
}

# csrc_fail MESSAGE says why the library is not built, on stderr, and exits 1.
csrc_fail() {
	echo "$name: $1" >&2
	exit 1
}

# csrc_need_cc HINT fails, naming HINT, when there is no C compiler.
csrc_need_cc() {
	command -v "$cc" >/dev/null || csrc_fail "no C compiler ($cc): $1"
}

# csrc_build FLAGS... -- LIBS... compiles src into out with the common flags
# and FLAGS, against the ONNX Runtime C API header onnxruntime_go vendors,
# linking LIBS, through a temporary file beside out; it prints out.
csrc_build() {
	local flags=()
	while [[ $1 != -- ]]; do
		flags+=("$1")
		shift
	done
	shift
	local hdr
	hdr=$(cd "$root" && "$go" list -m -f '{{.Dir}}' github.com/yalue/onnxruntime_go)
	[[ -f "$hdr/onnxruntime_c_api.h" ]] || csrc_fail "onnxruntime_c_api.h not found in $hdr (run go mod download)"
	mkdir -p "$(dirname "$out")"
	csrc_tmp=$(mktemp "$out.XXXXXX")
	trap 'rm -f "$csrc_tmp"' EXIT
	"$cc" -std=c11 -D_GNU_SOURCE -O3 -fno-math-errno -fPIC -shared -fvisibility=hidden \
		-Wall -Wextra "${flags[@]}" -I"$hdr" -o "$csrc_tmp" "$src" "$@"
	mv "$csrc_tmp" "$out"
	trap - EXIT
	echo "$out"
}
