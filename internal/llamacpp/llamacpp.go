// Package llamacpp runs real llama.cpp as an independent reference for tests:
// whether a GGUF file loads, its tokenization, the logits of a forward pass
// (optionally with a LoRA adapter GGUF), and greedy generation.
//
// llama.cpp v0.5.0 (ggml 0.25.1, commit de3ff815ea7d) comes prebuilt for the
// CPU from the npm package @node-llama-cpp/linux-x64; scripts/llamacpp.sh
// installs it into .deps/llamacpp with a small C driver
// (cdriver/migu-llamacpp.c) built against the llama.h of the same release.
// Each call runs the driver in a subprocess with Threads threads, a float32
// KV cache, flash attention off and every position in one batch; llama.cpp's
// log stays out of stdout and is shown only when a call fails.
//
// The first call runs scripts/llamacpp.sh (a no-op once installed). Where it
// cannot install llama.cpp the test is skipped with the script's reason, or
// fails under MIGU_REQUIRE_REFERENCE=1 (as internal/testenv does).
package llamacpp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/migu-ml/migu/internal/testenv"
)

// Threads is the thread count of every llama.cpp run. Logits do not depend
// on it on the machines measured (1 and 2 give identical bits), but keeping
// it fixed keeps the reference reproducible.
const Threads = 1

// Version is the llama.cpp release that scripts/llamacpp.sh installs.
const Version = "v0.5.0"

// Timeout bounds one driver run.
var Timeout = 10 * time.Minute

// Driver returns the path of the migu-llamacpp driver, installing llama.cpp
// with scripts/llamacpp.sh on first use; it skips (or fails under
// MIGU_REQUIRE_REFERENCE=1) when that is not possible. $MIGU_LLAMACPP names
// a driver to use instead.
func Driver(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MIGU_LLAMACPP"); p != "" {
		return p
	}
	return testenv.FromScript(t, "scripts/llamacpp.sh", "llama.cpp reference")
}

// Options are the less common knobs of a run.
type Options struct {
	// LoRA is a LoRA adapter GGUF applied with llama_adapter_lora_init and
	// llama_set_adapters_lora; empty means none.
	LoRA string
	// LoRAScale is the adapter's user scale (llama.cpp's --lora-scaled);
	// llama.cpp multiplies it by adapter.lora.alpha / rank. Zero means 1.
	LoRAScale float32
	// CPU loads only ggml's CPU backend variant libggml-cpu-CPU.so (x64,
	// sse42, haswell, skylakex, zen4, ...) instead of the best one for this
	// CPU; $MIGU_LLAMACPP_CPU sets it for every run. Different variants use
	// different SIMD kernels and so give slightly different logits.
	CPU string
	// StopAtEOG ends greedy generation after an end-of-generation token.
	StopAtEOG bool
	// LlamaDefaults keeps llama.cpp's own context defaults, an F16 KV cache
	// and flash attention "auto" (what llama-cli, node-llama-cpp and ollama
	// run), instead of the float32 KV cache without flash attention used
	// otherwise. On SmolLM2 Q4_1 the two differ by up to about 0.9 in the
	// logits (of magnitude 20).
	LlamaDefaults bool
}

func (o Options) args() []string {
	a := []string{"--threads", strconv.Itoa(Threads)}
	cpu := o.CPU
	if cpu == "" {
		cpu = os.Getenv("MIGU_LLAMACPP_CPU")
	}
	if cpu != "" {
		a = append(a, "--cpu", cpu)
	}
	if o.LoRA != "" {
		s := o.LoRAScale
		if s == 0 {
			s = 1
		}
		a = append(a, "--lora", o.LoRA, "--lora-scale", strconv.FormatFloat(float64(s), 'g', -1, 32))
	}
	if o.StopAtEOG {
		a = append(a, "--stop-eog")
	}
	if o.LlamaDefaults {
		a = append(a, "--defaults")
	}
	return a
}

// run runs the driver and returns its stdout, or an error that carries
// llama.cpp's log.
func run(t testing.TB, args []string, stdin []byte) ([]byte, error) {
	t.Helper()
	drv := Driver(t)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, drv, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("llama.cpp (%s %s): %v\n%s", filepath.Base(drv), strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func mustRun(t testing.TB, args []string, stdin []byte) []byte {
	t.Helper()
	out, err := run(t, args, stdin)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func idsText(ids []int) []byte {
	var b bytes.Buffer
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(id))
	}
	b.WriteByte('\n')
	return b.Bytes()
}

func parseIDs(line string) ([]int, error) {
	f := strings.Fields(line)
	ids := make([]int, len(f))
	for i, s := range f {
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("bad token id %q from llama.cpp", s)
		}
		ids[i] = v
	}
	return ids, nil
}

// Info is what llama.cpp reports about a model it loaded.
type Info struct {
	Version                  string // llama_version(), "0.5.0-dev"
	Desc                     string // llama_model_desc, e.g. "llama 256M Q4_1"
	NVocab, NCtxTrain, NEmbd int
	NLayer, NHead, NHeadKV   int
	NParams, Size            uint64
	BOS, EOS                 int    // -1 when the vocabulary has none
	System                   string // llama_print_system_info
	Meta                     map[string]string
	VocabType                int // enum llama_vocab_type: 1 SPM, 2 BPE, 3 WPM, 4 UGM, 5 RWKV
}

// LoadErr loads gguf fully in llama.cpp (weights included, on the CPU) and
// returns what llama.cpp reports, or an error with llama.cpp's log when it
// refuses the file. Metadata arrays (the token lists, merges) are left out
// of Meta.
func LoadErr(t testing.TB, gguf string) (Info, error) {
	t.Helper()
	out, err := run(t, append(Options{}.args(), "info", gguf), nil)
	if err != nil {
		return Info{}, err
	}
	in := Info{Meta: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "llama.version":
			in.Version = v
		case "desc":
			in.Desc = v
		case "n_vocab":
			in.NVocab = int(n)
		case "vocab_type":
			in.VocabType = int(n)
		case "n_ctx_train":
			in.NCtxTrain = int(n)
		case "n_embd":
			in.NEmbd = int(n)
		case "n_layer":
			in.NLayer = int(n)
		case "n_head":
			in.NHead = int(n)
		case "n_head_kv":
			in.NHeadKV = int(n)
		case "n_params":
			in.NParams = uint64(n)
		case "size":
			in.Size = uint64(n)
		case "bos":
			in.BOS = int(n)
		case "eos":
			in.EOS = int(n)
		case "system":
			in.System = v
		default:
			if m, ok := strings.CutPrefix(k, "meta."); ok {
				in.Meta[m] = v
			}
		}
	}
	return in, sc.Err()
}

// Load is LoadErr that fails the test when llama.cpp cannot load gguf.
func Load(t testing.TB, gguf string) Info {
	t.Helper()
	in, err := LoadErr(t, gguf)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// Tokenize returns llama.cpp's token ids (llama_tokenize) for each text with
// gguf's vocabulary. addBOS is llama_tokenize's add_special: it adds BOS
// (and EOS) only where the GGUF's tokenizer.ggml.add_bos_token (add_eos_token)
// says so. parseSpecial makes special tokens in the text, such as
// "<|im_start|>", single ids instead of plain text.
func Tokenize(t testing.TB, gguf string, texts []string, addBOS, parseSpecial bool) [][]int {
	t.Helper()
	args := Options{}.args()
	if addBOS {
		args = append(args, "--bos")
	}
	if parseSpecial {
		args = append(args, "--special")
	}
	var in bytes.Buffer
	for _, s := range texts {
		fmt.Fprintf(&in, "%d\n%s", len(s), s)
	}
	out := mustRun(t, append(args, "tokenize", gguf), in.Bytes())
	lines := strings.Split(string(out), "\n")
	if len(lines) != len(texts)+1 || lines[len(texts)] != "" {
		t.Fatalf("llama.cpp tokenize: %d lines of output for %d texts", len(lines)-1, len(texts))
	}
	res := make([][]int, len(texts))
	for i := range texts {
		ids, err := parseIDs(lines[i])
		if err != nil {
			t.Fatal(err)
		}
		res[i] = ids
	}
	return res
}

// Detokenize returns llama.cpp's text (llama_detokenize) for each id list;
// renderSpecial renders special tokens such as "<|im_end|>" as text.
func Detokenize(t testing.TB, gguf string, ids [][]int, renderSpecial bool) []string {
	t.Helper()
	args := Options{}.args()
	if renderSpecial {
		args = append(args, "--special")
	}
	var in bytes.Buffer
	for _, l := range ids {
		in.Write(idsText(l))
	}
	out := mustRun(t, append(args, "detokenize", gguf), in.Bytes())
	r := bufio.NewReader(bytes.NewReader(out))
	res := make([]string, len(ids))
	for i := range ids {
		var n int
		if _, err := fmt.Fscanf(r, "%d\n", &n); err != nil {
			t.Fatalf("llama.cpp detokenize: bad output: %v", err)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatalf("llama.cpp detokenize: short output: %v", err)
		}
		res[i] = string(b)
	}
	return res
}

// Logits returns llama.cpp's logits for every position of ids (one decode of
// the whole sequence from position 0): len(ids) rows of n_vocab float32s,
// exactly as llama_get_logits_ith gives them. loraPath, when not empty, is a
// LoRA adapter GGUF applied at scale 1 (times its alpha / rank).
func Logits(t testing.TB, gguf string, ids []int, loraPath string) [][]float32 {
	t.Helper()
	return LogitsWith(t, gguf, ids, Options{LoRA: loraPath})
}

// LastLogits returns the logits of the last position only.
func LastLogits(t testing.TB, gguf string, ids []int, loraPath string) []float32 {
	t.Helper()
	return logits(t, gguf, ids, Options{LoRA: loraPath}, true)[0]
}

// LogitsWith is Logits with Options.
func LogitsWith(t testing.TB, gguf string, ids []int, o Options) [][]float32 {
	t.Helper()
	return logits(t, gguf, ids, o, false)
}

func logits(t testing.TB, gguf string, ids []int, o Options, last bool) [][]float32 {
	t.Helper()
	if len(ids) == 0 {
		t.Fatal("llamacpp.Logits: no token ids")
	}
	args := o.args()
	if last {
		args = append(args, "--last")
	}
	out := mustRun(t, append(args, "logits", gguf), idsText(ids))
	head, body, ok := bytes.Cut(out, []byte{'\n'})
	var rows, nv int
	if ok {
		_, err := fmt.Sscanf(string(head), "%d %d", &rows, &nv)
		ok = err == nil
	}
	want := len(ids)
	if last {
		want = 1
	}
	if !ok || rows != want || nv <= 0 || len(body) != rows*nv*4 {
		t.Fatalf("llama.cpp logits: malformed output (header %q, %d bytes)", head, len(body))
	}
	res := make([][]float32, rows)
	for i := range res {
		row := make([]float32, nv)
		for j := range row {
			row[j] = math.Float32frombits(binary.LittleEndian.Uint32(body[(i*nv+j)*4:]))
		}
		res[i] = row
	}
	return res
}

// Greedy returns the n token ids llama.cpp generates after promptIDs, taking
// the argmax of the logits at each step (lowest id on ties); it does not stop
// at end-of-generation tokens (see GreedyWith and Options.StopAtEOG).
func Greedy(t testing.TB, gguf string, promptIDs []int, n int) []int {
	t.Helper()
	return GreedyWith(t, gguf, promptIDs, n, Options{})
}

// GreedyWith is Greedy with Options (a LoRA adapter, stopping at EOG).
func GreedyWith(t testing.TB, gguf string, promptIDs []int, n int, o Options) []int {
	t.Helper()
	if len(promptIDs) == 0 || n < 1 {
		t.Fatalf("llamacpp.Greedy: need prompt ids and n >= 1 (got %d ids, n=%d)", len(promptIDs), n)
	}
	out := mustRun(t, append(o.args(), "greedy", gguf, strconv.Itoa(n)), idsText(promptIDs))
	ids, err := parseIDs(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) > n || (!o.StopAtEOG && len(ids) != n) {
		t.Fatalf("llama.cpp greedy: %d ids for n=%d", len(ids), n)
	}
	return ids
}
