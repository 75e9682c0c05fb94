#!/usr/bin/env bash
# Runs lm-evaluation-harness itself as the reference for `migu eval` on tiny
# random Llama and T5 models (see lmeval_check.py) and appends the comparison
# to benchmarks/eval/RESULTS.md. lm-eval goes into a throwaway virtual
# environment ($LMEVAL_VENV, default /tmp/lmeval-venv) with the system site
# packages visible — never into the project's .venv, whose torch is Debian's.
# pip may pull a newer torch into that throwaway environment; that is fine for
# a reference. Variables: LIMIT (rows per task, default 100), DATA (task files,
# default ../shared/data/eval), WORK (scratch, default /tmp/migu-lmeval-check),
# OUT (Markdown to append to).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${LMEVAL_VENV:-/tmp/lmeval-venv}
limit=${LIMIT:-100}
data=${DATA:-../shared/data/eval}
work=${WORK:-/tmp/migu-lmeval-check}
out=${OUT:-benchmarks/eval/RESULTS.md}
if ! "$venv/bin/python" -c "import lm_eval" 2>/dev/null; then
	python3 -m venv --system-site-packages "$venv"
	"$venv/bin/pip" install -q lm-eval==0.4.5 transformers==4.46.3
fi
mkdir -p "$work"
go build -o "$work/migu" ./cmd/migu
for arch in llama t5; do
	if [ ! -e "$work/$arch/migu.json" ]; then
		rm -rf "$work/$arch-hf" "$work/$arch"
		"$work/migu" init --arch "$arch" --preset tiny --seed 1 --out "$work/$arch-hf" >/dev/null
		"$work/migu" export --from "$work/$arch-hf" --out "$work/$arch" >/dev/null
	fi
	HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
		"$venv/bin/python" benchmarks/eval/lmeval_check.py --hf "$work/$arch-hf" --model "$work/$arch" \
		--migu "$work/migu" --data "$data" --limit "$limit" --batch 8 --append "$out" \
		--label "tiny $arch" --command "LIMIT=$limit benchmarks/eval/lmeval_check.sh" 2>"$work/lmeval-$arch.log"
done
