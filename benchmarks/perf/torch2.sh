#!/usr/bin/env bash
# Makes .deps/torch2, a throwaway venv with PyPI's PyTorch 2.x and the
# transformers/peft pins of requirements-torch2.txt: the benchmark's
# anchor beside Debian's torch 1.13 (fp32 and bf16 autocast; see
# README.md). Only make bench runs it; make test and make demo never do.
# Skipped when a stamp says it is done with the same pins; a failed
# install is reported and the benchmark runs with torch 1.13 alone.
# TORCH2_VENV moves the venv, BENCH_TORCH2=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${TORCH2_VENV:-.deps/torch2}
req=benchmarks/perf/requirements-torch2.txt
say() { printf 'torch2: %s\n' "$*" >&2; }
if [[ ${BENCH_TORCH2:-1} == 0 ]]; then
	say "BENCH_TORCH2=0: skipped"
	exit 0
fi
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -f "$venv/.migu-stamp" && "$(cat "$venv/.migu-stamp")" == "$want" ]] && "$venv/bin/python" -c 'import torch, transformers, peft' 2>/dev/null; then
	exit 0
fi
avail=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4/1024/1024)}')
if ((avail < 12)); then
	say "only ${avail} GB free beside $venv (the CUDA wheels take about 7 GB): skipped, PyTorch 1.13 only"
	exit 0
fi
say "installing $(grep -m1 '^torch==' "$req") and its pins into $venv (several GB of CUDA wheels; once)"
rm -rf "$venv"
if ! /usr/bin/python3 -m venv "$venv" ||
	! "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" ||
	! "$venv/bin/python" -c 'import torch, transformers, peft'; then
	say "install failed: the benchmark runs with PyTorch 1.13 alone"
	rm -rf "$venv"
	exit 0
fi
echo "$want" >"$venv/.migu-stamp"
say "PyTorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') ready in $venv ($(du -sh "$venv" | cut -f1))"
