#!/usr/bin/env bash
# Installs llama.cpp as an independent reference for the tests of
# internal/llamacpp: the prebuilt CPU shared libraries of llama.cpp v0.5.0
# (ggml 0.25.1) shipped in the npm package @node-llama-cpp/linux-x64, and
# llama.h from the llama.cpp source bundle of the same release inside the npm
# package node-llama-cpp, against which gcc builds the small driver
# internal/llamacpp/cdriver/migu-llamacpp.c. Both packages are checked
# against their SHA-256 sums, and so are the libraries taken from them.
#
# Result: .deps/llamacpp/migu-llamacpp with its libraries in
# .deps/llamacpp/lib. Skipped when the stamp says it is done with the same
# pins and driver source. Prints the driver's path on stdout; messages go to
# stderr, and a failure exits non-zero with a one-line reason.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
dir="$deps/llamacpp"
src="$root/internal/llamacpp/cdriver/migu-llamacpp.c"
bin="$dir/migu-llamacpp"

nlc_version=3.22.1
llama_release=v0.5.0
llama_commit=de3ff815ea7d559ee917f063901b8986f038abc6 # the source bundle's HEAD
bins_tgz_sha256=0d953e1503d5ab4608d8ed5b739132308c81ac05ffeb760d2a7f30e08a9f90e0
src_tgz_sha256=a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f
libllama_sha256=2ecd1d85f68456573a664106a9039366b88231579fd65d9669c9a6ab41374fd4
libggml_sha256=41cd5e6ad78b9f0af31a6f80d637d3168e75ff84db14c495de4d3d9c95607444
libggml_base_sha256=6c342c8aeb20cb31a18099d6f79de4de6703814d1cfd5c4d754a8643087e486e

say() { printf 'llamacpp: %s\n' "$*" >&2; }
die() { printf 'llamacpp: %s\n' "$*" >&2; exit 1; }

[[ -f "$src" ]] || die "driver source $src not found"
want=$(printf '%s\n' "$nlc_version" "$llama_release" "$llama_commit" "$bins_tgz_sha256" "$src_tgz_sha256" |
	cat - "$src" "$0" | sha256sum | cut -d' ' -f1)
stamp="$dir/.migu-stamp"

done_already() {
	[[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]
}

if done_already; then
	echo "$bin"
	exit 0
fi

mkdir -p "$deps"
# tests of several packages may call this at once: one installs, the others wait
exec 9>"$deps/.llamacpp.lock"
command -v flock >/dev/null && flock 9
if done_already; then
	echo "$bin"
	exit 0
fi

case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*) die "the prebuilt llama.cpp of @node-llama-cpp/linux-x64 is for Linux/x86_64, not $(uname -s)/$(uname -m)" ;;
esac
for tool in npm tar git cc sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found: install it (npm from Node.js >= 20; cc from gcc), then rerun scripts/llamacpp.sh"
done

tmp=$(mktemp -d "$deps/llamacpp.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

say "fetching @node-llama-cpp/linux-x64@$nlc_version and node-llama-cpp@$nlc_version with npm pack (46 MB)"
(cd "$tmp" && npm pack "@node-llama-cpp/linux-x64@$nlc_version" "node-llama-cpp@$nlc_version" --silent >/dev/null 2>&1) ||
	die "npm pack @node-llama-cpp/linux-x64@$nlc_version node-llama-cpp@$nlc_version failed (is the npm registry reachable?)"
echo "$bins_tgz_sha256  $tmp/node-llama-cpp-linux-x64-$nlc_version.tgz" | sha256sum -c --status ||
	die "checksum mismatch for node-llama-cpp-linux-x64-$nlc_version.tgz"
echo "$src_tgz_sha256  $tmp/node-llama-cpp-$nlc_version.tgz" | sha256sum -c --status ||
	die "checksum mismatch for node-llama-cpp-$nlc_version.tgz"

# the libraries: llama, ggml, ggml-base and every CPU variant (ggml picks the
# best one for the CPU at run time); not the Node addon nor libllama-common
mkdir -p "$tmp/bins" "$tmp/out/lib"
tar -xzf "$tmp/node-llama-cpp-linux-x64-$nlc_version.tgz" -C "$tmp/bins" package/bins/linux-x64 ||
	die "node-llama-cpp-linux-x64-$nlc_version.tgz does not hold package/bins/linux-x64"
b="$tmp/bins/package/bins/linux-x64"
grep -q "\"release\":\"$llama_release\"" "$b/_nlcBuildMetadata.json" ||
	die "@node-llama-cpp/linux-x64@$nlc_version was not built from llama.cpp $llama_release"
echo "$libllama_sha256  $b/libllama.v0.5.0.so" | sha256sum -c --status || die "checksum mismatch for libllama.v0.5.0.so"
echo "$libggml_sha256  $b/libggml.v0.5.0.so" | sha256sum -c --status || die "checksum mismatch for libggml.v0.5.0.so"
echo "$libggml_base_sha256  $b/libggml-base.so" | sha256sum -c --status || die "checksum mismatch for libggml-base.so"
cp "$b"/libllama.v0.5.0.so "$b"/libggml.v0.5.0.so "$b"/libggml-base.so "$b"/libggml-cpu-*.so "$tmp/out/lib/"

# the headers of the same release, from the git bundle that node-llama-cpp
# ships to build llama.cpp offline
tar -xzf "$tmp/node-llama-cpp-$nlc_version.tgz" -C "$tmp" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json ||
	die "node-llama-cpp-$nlc_version.tgz does not hold package/llama/gitRelease.bundle"
grep -q "\"tag\": \"$llama_release\"" "$tmp/package/llama/llama.cpp.info.json" ||
	die "node-llama-cpp@$nlc_version bundles another llama.cpp release than $llama_release"
git clone --quiet --bare "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.git" 2>/dev/null ||
	die "git could not read the llama.cpp bundle of node-llama-cpp@$nlc_version"
[[ "$(git --git-dir="$tmp/llama.git" rev-parse HEAD)" == "$llama_commit" ]] ||
	die "the llama.cpp bundle of node-llama-cpp@$nlc_version is not commit $llama_commit"
mkdir -p "$tmp/out/src"
git --git-dir="$tmp/llama.git" archive HEAD include ggml/include LICENSE | tar -x -C "$tmp/out/src" ||
	die "could not extract llama.h from the llama.cpp bundle"

say "building migu-llamacpp against llama.cpp $llama_release ($llama_commit)"
cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-I"$tmp/out/src/include" -I"$tmp/out/src/ggml/include" "$src" -o "$tmp/out/migu-llamacpp" \
	-L"$tmp/out/lib" -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so -Wl,-rpath,'$ORIGIN/lib' ||
	die "cc could not build $src"
"$tmp/out/migu-llamacpp" --help >/dev/null 2>&1 || [[ $? -eq 2 ]] ||
	die "the built migu-llamacpp does not start (needs glibc >= 2.34 and libstdc++ of GCC >= 11)"

rm -rf "$dir"
mv "$tmp/out" "$dir"
echo "$want" >"$stamp"
say "llama.cpp $llama_release installed in $dir"
echo "$bin"
