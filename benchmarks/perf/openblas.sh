#!/usr/bin/env bash
# Puts Debian's OpenBLAS builds (OpenMP and pthreads) into .deps/openblas-*
# without installing them system-wide, so that the benchmark can offer
# PyTorch a fast BLAS through LD_LIBRARY_PATH. Debian's python3-torch links
# the generic libblas.so.3, which is the slow reference BLAS unless an
# optimised one is installed. Skipped when already done or without apt.
set -euo pipefail
cd "$(dirname "$0")/../.."
for kind in openmp pthread; do
	dest=.deps/openblas-$kind
	[ -e "$dest/libblas.so.3" ] && continue
	if ! command -v apt-get >/dev/null; then
		echo "openblas: no apt-get; PyTorch runs with the system BLAS" >&2
		exit 0
	fi
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download "libopenblas0-$kind" >/dev/null 2>&1) || { echo "openblas: apt-get download libopenblas0-$kind failed; skipped" >&2; rm -rf "$tmp"; continue; }
	dpkg -x "$tmp"/libopenblas0-"$kind"_*.deb "$tmp/x"
	mkdir -p "$dest"
	cp -a "$tmp"/x/usr/lib/*/openblas-"$kind"/. "$dest"/
	rm -rf "$tmp"
	echo "openblas: $dest"
done
