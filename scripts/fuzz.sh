#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME each (default 5s).
# `make test` runs it briefly; `make fuzz FUZZTIME=5m` runs it for real.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}
status=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		printf 'fuzz: %s %s for %s\n' "$pkg" "$target" "$fuzztime"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/migu-fuzz.log 2>&1; then
			cat /tmp/migu-fuzz.log
			status=1
		fi
	done
done
exit $status
