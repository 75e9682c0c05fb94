package testenv

import (
	"os"
	"sync"
	"testing"
)

var (
	bf16Once sync.Once
	bf16Lib  string
	bf16Err  string
)

// BF16 returns migu's bfloat16-product library (onnx/kernels,
// csrc/migu_bf16.c): $MIGU_BF16 when set, else bin/libmigu_bf16.so, built by
// scripts/bf16.sh when missing or older than its source. oneDNN is an
// optional accelerator, not a reference: where its headers are missing
// (no libdnnl-dev) the test skips with the reason even under
// MIGU_REQUIRE_REFERENCE=1, and fails only under MIGU_REQUIRE_BF16=1 (a
// machine that must test bf16).
func BF16(t testing.TB) string {
	t.Helper()
	bf16Once.Do(func() {
		if p := os.Getenv("MIGU_BF16"); p != "" {
			if _, err := os.Stat(p); err != nil {
				bf16Err = "bf16 library " + p + " (from $MIGU_BF16) not found"
			}
			bf16Lib = p
			return
		}
		res := runScript("scripts/bf16.sh")
		bf16Lib, bf16Err = res.out, res.err
	})
	if bf16Err != "" {
		if os.Getenv("MIGU_REQUIRE_BF16") == "1" {
			t.Fatalf("%s (MIGU_REQUIRE_BF16=1)", bf16Err)
		}
		t.Skipf("bf16 products unavailable, skipped: %s", bf16Err)
	}
	return bf16Lib
}
