#!/usr/bin/env bash
# Prepares what migu needs beside Go: the ONNX Runtime shared library, the
# Python environment of python/export/ and the reference tests, llama.cpp
# (scripts/llamacpp.sh), the reference of the GGUF tests, bubblewrap, the
# sandbox of HumanEval's programs, Open MPI for data-parallel runs, and
# oneDNN's headers for the bf16 and float32 products of bin/libmigu_bf16.so.
# Each part is skipped when a stamp says it is already done with the same pins.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
mkdir -p "$deps"

ort_version=1.30.0
ort_tgz_sha256=6e3390d6b783e7be946fad629292799da28d0b42f84856e50d2c1b0383291e75
ort_lib_sha256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

setup_ort() {
	local dir="$deps/ort" lib="$deps/ort/libonnxruntime.so.1"
	if [[ -f "$lib" ]] && echo "$ort_lib_sha256  $lib" | sha256sum -c --status; then
		say "ONNX Runtime $ort_version already in $dir"
		return
	fi
	case "$(uname -s)/$(uname -m)" in
	Linux/x86_64) ;;
	*) die "the npm package ships linux/x64 here; on $(uname -s)/$(uname -m) download an ORT release archive and set ONNXRUNTIME_LIB (see README)" ;;
	esac
	command -v npm >/dev/null || die "npm not found: install Node.js/npm, or set ONNXRUNTIME_LIB to an ORT $ort_version library (see README)"
	local tmp
	tmp=$(mktemp -d "$deps/ort.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	say "fetching onnxruntime-node@$ort_version with npm pack"
	(cd "$tmp" && npm pack "onnxruntime-node@$ort_version" --silent >/dev/null)
	echo "$ort_tgz_sha256  $tmp/onnxruntime-node-$ort_version.tgz" | sha256sum -c --status ||
		die "checksum mismatch for onnxruntime-node-$ort_version.tgz"
	tar -xzf "$tmp/onnxruntime-node-$ort_version.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
	echo "$ort_lib_sha256  $tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --status ||
		die "checksum mismatch for libonnxruntime.so.1 inside the npm package"
	mkdir -p "$dir"
	mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$lib.tmp"
	mv "$lib.tmp" "$lib"
	say "ONNX Runtime $ort_version installed in $dir"
}

setup_python() {
	local venv="$root/.venv" req="$root/python/requirements.txt" nodeps="$root/python/requirements-nodeps.txt"
	local stamp="$venv/.migu-stamp" want
	want=$(cat "$req" "$nodeps" | sha256sum | cut -d' ' -f1)
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c 'import torch, transformers, onnx' 2>/dev/null; then
		say "Python environment already in $venv"
		return
	fi
	if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
		local sudo=""
		[[ $(id -u) -ne 0 ]] && sudo="sudo -n"
		command -v apt-get >/dev/null || die "no apt-get: install PyTorch for /usr/bin/python3 yourself, then rerun make setup"
		say "installing Debian's python3-torch (CPU) and python3-venv"
		$sudo apt-get update -qq >/dev/null || die "apt-get update failed (run make setup as root or with sudo)"
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-torch python3-venv >/dev/null ||
			die "apt-get install python3-torch python3-venv failed"
	fi
	say "creating $venv with pinned packages"
	rm -rf "$venv"
	/usr/bin/python3 -m venv --system-site-packages "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
	"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$nodeps"
	"$venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch.__file__.startswith("/usr/") else "setup: pip replaced Debian torch: " + torch.__file__)'
	echo "$want" >"$stamp"
	say "Python environment ready in $venv"
}

# apt_install installs Debian packages, as root or through sudo -n; it
# returns non-zero where that cannot be done.
apt_install() {
	local sudo=""
	[[ $(id -u) -ne 0 ]] && sudo="sudo -n"
	command -v apt-get >/dev/null &&
		$sudo apt-get update -qq >/dev/null 2>&1 &&
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1
}

# bubblewrap (bwrap) is the strongest level of migu's sandbox; without it
# HumanEval runs under the fallback (namespaces and an unprivileged uid), so
# a failed install is reported, not fatal.
setup_sandbox() {
	if command -v bwrap >/dev/null; then
		say "$(bwrap --version) already installed"
	elif apt_install bubblewrap; then
		say "$(bwrap --version) installed"
	else
		say "could not install bubblewrap (no apt-get or no root): HumanEval programs will run under the fallback sandbox"
	fi
}

# Open MPI runs migu data parallel under mpirun (docs/distributed.md); migu
# opens libmpi.so.40 at run time, so only the tests and users of mpirun need it.
setup_mpi() {
	if command -v mpirun >/dev/null && ldconfig -p | grep libmpi.so.40 >/dev/null; then
		say "Open MPI $(mpirun --version | sed -n '1s/.* //p') already installed"
	elif apt_install openmpi-bin libopenmpi-dev; then
		say "Open MPI $(mpirun --version | sed -n '1s/.* //p') installed"
	else
		die "could not install Open MPI (apt-get install openmpi-bin libopenmpi-dev, as root)"
	fi
}

# oneDNN (libdnnl-dev) lets scripts/bf16.sh build bin/libmigu_bf16.so, the
# bf16 products and the oneDNN float32 products; without it migu trains in
# float32 through ORT alone and the tests of that library skip, so a failed
# install is reported, not fatal.
setup_onednn() {
	if echo '#include <oneapi/dnnl/dnnl.h>' | "${CC:-cc}" -E -x c - >/dev/null 2>&1; then
		say "oneDNN headers already installed"
	elif apt_install libdnnl-dev; then
		say "oneDNN $(dpkg-query -W -f '${Version}' libdnnl-dev 2>/dev/null) installed"
	else
		say "could not install libdnnl-dev (no apt-get or no root): bf16 products unavailable, their tests skip"
	fi
}

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(ort python llamacpp sandbox mpi onednn)
for p in "${parts[@]}"; do
	case "$p" in
	ort) setup_ort ;;
	python) setup_python ;;
	llamacpp) "$root/scripts/llamacpp.sh" >/dev/null || exit 1 ;;
	sandbox) setup_sandbox ;;
	mpi) setup_mpi ;;
	onednn) setup_onednn ;;
	*) die "unknown part $p (ort, python, llamacpp, sandbox, mpi, onednn)" ;;
	esac
done
