// migu-llamacpp: a small driver over llama.cpp's C API (llama.h) that the Go
// tests of internal/llamacpp run as a subprocess. scripts/llamacpp.sh builds
// it against the llama.h of the very release whose prebuilt shared libraries
// it installs, so the two always match.
//
// usage: migu-llamacpp [flags] COMMAND MODEL.gguf [N]
//
// flags (before COMMAND):
//   --threads N       threads for llama_decode (default 1)
//   --cpu VARIANT     load only libggml-cpu-VARIANT.so (e.g. x64, haswell,
//                     skylakex); default: every variant, ggml picks the best
//   --lora PATH       apply a LoRA adapter GGUF (llama_adapter_lora_init)
//   --lora-scale S    its scale (default 1)
//   --bos             tokenize: add BOS/EOS as the vocabulary says (add_special)
//   --special         tokenize: parse special tokens; detokenize: render them
//   --last            logits: only the last position
//   --stop-eog        greedy: stop after an end-of-generation token
//   --defaults        keep llama.cpp's own context defaults: F16 KV cache and
//                     flash attention "auto" (what llama-cli and ollama run)
//   --verbose         copy llama.cpp's log to stderr as it comes
//
// commands (input on stdin, output on stdout):
//   info        -> key=value lines: versions, sizes, special ids, metadata
//   tokenize    stdin: texts framed as "<byte length>\n<bytes>";
//               stdout: one line of space-separated ids per text
//   detokenize  stdin: one line of ids per text; stdout: framed texts
//   logits      stdin: token ids; stdout: "ROWS N_VOCAB\n" then ROWS*N_VOCAB
//               little-endian float32 (every position, or the last)
//   greedy      stdin: prompt ids, N is the number of tokens to generate;
//               stdout: the generated ids on one line (argmax of the logits,
//               lowest id on ties)
//
// llama.cpp's log is kept in memory and written to stderr only when the
// command fails (or with --verbose), so stdout carries nothing but results.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <unistd.h>

#include "ggml-backend.h"
#include "llama.h"

static char *logbuf;
static size_t loglen, logcap;
static int verbose;

static void log_cb(enum ggml_log_level level, const char *text, void *ud) {
	(void)level;
	(void)ud;
	if (verbose) {
		fputs(text, stderr);
		return;
	}
	size_t n = strlen(text);
	if (loglen + n + 1 > logcap) {
		size_t c = logcap ? logcap * 2 : 1 << 16;
		while (c < loglen + n + 1) c *= 2;
		char *b = realloc(logbuf, c);
		if (!b) return;
		logbuf = b;
		logcap = c;
	}
	memcpy(logbuf + loglen, text, n + 1);
	loglen += n;
}

static void die(const char *fmt, ...) {
	if (!verbose && loglen > 0) {
		fputs("--- llama.cpp log ---\n", stderr);
		// the tail is what tells why
		const char *s = logbuf;
		if (loglen > 8000) s = logbuf + loglen - 8000;
		fputs(s, stderr);
		fputs("--- end of log ---\n", stderr);
	}
	va_list ap;
	va_start(ap, fmt);
	fputs("migu-llamacpp: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void *xmalloc(size_t n) {
	void *p = malloc(n ? n : 1);
	if (!p) die("out of memory");
	return p;
}

// read_ids reads whitespace-separated token ids from f until a newline (if
// line is set) or EOF. It returns the count, or -1 at EOF with nothing read.
static int read_ids(FILE *f, llama_token **out, int line) {
	int n = 0, cap = 64, c, got = 0;
	llama_token *ids = xmalloc(cap * sizeof *ids);
	for (;;) {
		c = fgetc(f);
		if (c == EOF) break;
		got = 1;
		if (c == '\n' && line) break;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
		if (c != '-' && (c < '0' || c > '9')) die("bad token id input byte %d", c);
		long v = 0, neg = 0;
		if (c == '-') {
			neg = 1;
			c = fgetc(f);
		}
		for (; c >= '0' && c <= '9'; c = fgetc(f)) v = v * 10 + (c - '0');
		if (n == cap) {
			cap *= 2;
			ids = realloc(ids, cap * sizeof *ids);
			if (!ids) die("out of memory");
		}
		ids[n++] = (llama_token)(neg ? -v : v);
		if (c == EOF) break;
		if (c == '\n' && line) break;
	}
	*out = ids;
	if (!got && n == 0) return -1;
	return n;
}

static void load_backends(const char *exe, const char *cpu) {
	// the libraries lie in lib/ beside this executable
	char path[4096], dir[4096];
	ssize_t k = readlink("/proc/self/exe", path, sizeof path - 1);
	if (k <= 0) {
		snprintf(path, sizeof path, "%s", exe);
		k = strlen(path);
	}
	path[k] = 0;
	snprintf(dir, sizeof dir, "%s/lib", dirname(path));
	if (cpu && *cpu) {
		char lib[4200];
		snprintf(lib, sizeof lib, "%s/libggml-cpu-%s.so", dir, cpu);
		if (!ggml_backend_load(lib)) die("cannot load CPU backend %s", lib);
	} else {
		ggml_backend_load_all_from_path(dir);
	}
	if (ggml_backend_dev_count() == 0) die("no ggml backend found in %s", dir);
}

struct opts {
	int threads;
	const char *cpu, *lora;
	float lora_scale;
	int bos, special, last, stop_eog, defaults;
};

static struct llama_model *load_model(const char *path, int vocab_only) {
	struct llama_model_params mp = llama_model_default_params();
	mp.n_gpu_layers = 0;
	mp.vocab_only = vocab_only;
	struct llama_model *m = llama_model_load_from_file(path, mp);
	if (!m) die("llama.cpp could not load %s", path);
	return m;
}

static struct llama_context *new_context(struct llama_model *m, const struct opts *o, int n_ctx) {
	struct llama_context_params cp = llama_context_default_params();
	if (n_ctx < 16) n_ctx = 16;
	cp.n_ctx = n_ctx;
	cp.n_batch = n_ctx;
	cp.n_ubatch = n_ctx; // one physical batch: every position in one graph
	cp.n_seq_max = 1;
	cp.n_threads = o->threads;
	cp.n_threads_batch = o->threads;
	if (!o->defaults) {
		cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
		cp.type_k = GGML_TYPE_F32; // float32 KV cache (the default is F16)
		cp.type_v = GGML_TYPE_F32;
	}
	cp.no_perf = true;
	cp.embeddings = false;
	struct llama_context *ctx = llama_init_from_model(m, cp);
	if (!ctx) die("llama_init_from_model failed (n_ctx %d)", n_ctx);
	if (o->lora) {
		struct llama_adapter_lora *a = llama_adapter_lora_init(m, o->lora);
		if (!a) die("llama_adapter_lora_init could not load %s", o->lora);
		float s = o->lora_scale;
		if (llama_set_adapters_lora(ctx, &a, 1, &s) != 0) die("llama_set_adapters_lora failed");
	}
	return ctx;
}

static void decode(struct llama_context *ctx, const llama_token *ids, int n, int pos0, int all_logits) {
	struct llama_batch b = llama_batch_init(n, 0, 1);
	for (int i = 0; i < n; i++) {
		b.token[i] = ids[i];
		b.pos[i] = pos0 + i;
		b.n_seq_id[i] = 1;
		b.seq_id[i][0] = 0;
		b.logits[i] = all_logits || i == n - 1;
	}
	b.n_tokens = n;
	int r = llama_decode(ctx, b);
	llama_batch_free(b);
	if (r != 0) die("llama_decode returned %d", r);
}

static void check_ids(const struct llama_vocab *v, const llama_token *ids, int n) {
	int nv = llama_vocab_n_tokens(v);
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= nv) die("token id %d out of range [0,%d)", ids[i], nv);
}

static int argmax(const float *x, int n) {
	int best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best]) best = i;
	return best;
}

static void cmd_info(const char *path, const struct opts *o) {
	(void)o;
	struct llama_model *m = load_model(path, 0);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	char buf[512];
	llama_model_desc(m, buf, sizeof buf);
	printf("llama.version=%s\n", llama_version());
	printf("desc=%s\n", buf);
	printf("n_vocab=%d\n", llama_vocab_n_tokens(v));
	printf("vocab_type=%d\n", (int)llama_vocab_type(v));
	printf("n_ctx_train=%d\n", llama_model_n_ctx_train(m));
	printf("n_embd=%d\n", llama_model_n_embd(m));
	printf("n_layer=%d\n", llama_model_n_layer(m));
	printf("n_head=%d\n", llama_model_n_head(m));
	printf("n_head_kv=%d\n", llama_model_n_head_kv(m));
	printf("n_params=%llu\n", (unsigned long long)llama_model_n_params(m));
	printf("size=%llu\n", (unsigned long long)llama_model_size(m));
	printf("bos=%d\neos=%d\n", llama_vocab_bos(v), llama_vocab_eos(v));
	printf("system=%s\n", llama_print_system_info());
	int nm = llama_model_meta_count(m);
	for (int i = 0; i < nm; i++) {
		char key[256];
		llama_model_meta_key_by_index(m, i, key, sizeof key);
		int32_t need = llama_model_meta_val_str_by_index(m, i, NULL, 0);
		if (need < 0) continue;
		char *val = xmalloc(need + 1);
		llama_model_meta_val_str_by_index(m, i, val, need + 1);
		for (char *p = val; *p; p++)
			if (*p == '\n' || *p == '\r') *p = ' ';
		printf("meta.%s=%s\n", key, val);
		free(val);
	}
	llama_model_free(m);
}

static void cmd_tokenize(const char *path, const struct opts *o) {
	struct llama_model *m = load_model(path, 1);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	for (;;) {
		long len;
		if (fscanf(stdin, "%ld", &len) != 1) break;
		if (fgetc(stdin) != '\n' || len < 0 || len > (1L << 30)) die("bad text frame");
		char *text = xmalloc(len + 1);
		if ((long)fread(text, 1, len, stdin) != len) die("short text frame");
		text[len] = 0;
		int cap = (int)len + 16;
		llama_token *ids = xmalloc(cap * sizeof *ids);
		int n = llama_tokenize(v, text, (int32_t)len, ids, cap, o->bos, o->special);
		if (n < 0) {
			cap = -n;
			ids = realloc(ids, cap * sizeof *ids);
			n = llama_tokenize(v, text, (int32_t)len, ids, cap, o->bos, o->special);
		}
		if (n < 0) die("llama_tokenize failed (%d)", n);
		for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
		putchar('\n');
		free(ids);
		free(text);
	}
	llama_model_free(m);
}

static void cmd_detokenize(const char *path, const struct opts *o) {
	struct llama_model *m = load_model(path, 1);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	llama_token *ids;
	int n;
	while ((n = read_ids(stdin, &ids, 1)) >= 0) {
		check_ids(v, ids, n);
		int cap = 64 + n * 16;
		char *text = xmalloc(cap);
		int k = llama_detokenize(v, ids, n, text, cap, false, o->special);
		if (k < 0) {
			cap = -k;
			text = realloc(text, cap);
			k = llama_detokenize(v, ids, n, text, cap, false, o->special);
		}
		if (k < 0) die("llama_detokenize failed (%d)", k);
		printf("%d\n", k);
		fwrite(text, 1, k, stdout);
		free(text);
		free(ids);
	}
	llama_model_free(m);
}

static void cmd_logits(const char *path, const struct opts *o) {
	llama_token *ids;
	int n = read_ids(stdin, &ids, 0);
	if (n <= 0) die("logits: no token ids on stdin");
	struct llama_model *m = load_model(path, 0);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	check_ids(v, ids, n);
	int nv = llama_vocab_n_tokens(v);
	struct llama_context *ctx = new_context(m, o, n);
	decode(ctx, ids, n, 0, !o->last);
	int rows = o->last ? 1 : n;
	printf("%d %d\n", rows, nv);
	for (int i = 0; i < rows; i++) {
		const float *x = llama_get_logits_ith(ctx, o->last ? -1 : i);
		if (!x) die("no logits for position %d", i);
		if ((int)fwrite(x, sizeof(float), nv, stdout) != nv) die("write failed");
	}
	fflush(stdout);
	llama_free(ctx);
	llama_model_free(m);
	free(ids);
}

static void cmd_greedy(const char *path, const struct opts *o, int gen) {
	llama_token *ids;
	int n = read_ids(stdin, &ids, 0);
	if (n <= 0) die("greedy: no prompt ids on stdin");
	struct llama_model *m = load_model(path, 0);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	check_ids(v, ids, n);
	int nv = llama_vocab_n_tokens(v);
	struct llama_context *ctx = new_context(m, o, n + gen);
	decode(ctx, ids, n, 0, 0);
	int pos = n;
	for (int k = 0; k < gen; k++) {
		const float *x = llama_get_logits_ith(ctx, -1);
		if (!x) die("no logits");
		llama_token t = argmax(x, nv);
		printf(k ? " %d" : "%d", t);
		if (o->stop_eog && llama_vocab_is_eog(v, t)) break;
		if (k + 1 < gen) decode(ctx, &t, 1, pos++, 0);
	}
	putchar('\n');
	llama_free(ctx);
	llama_model_free(m);
	free(ids);
}

static void usage(void) {
	fputs("usage: migu-llamacpp [--threads N] [--cpu VARIANT] [--lora PATH] [--lora-scale S] [--bos] [--special] "
	      "[--last] [--stop-eog] [--defaults] [--verbose] info|tokenize|detokenize|logits|greedy MODEL.gguf [N]\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv) {
	struct opts o = {.threads = 1, .lora_scale = 1.0f};
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--threads") && i + 1 < argc) o.threads = atoi(argv[++i]);
		else if (!strcmp(a, "--cpu") && i + 1 < argc) o.cpu = argv[++i];
		else if (!strcmp(a, "--lora") && i + 1 < argc) o.lora = argv[++i];
		else if (!strcmp(a, "--lora-scale") && i + 1 < argc) o.lora_scale = strtof(argv[++i], NULL);
		else if (!strcmp(a, "--bos")) o.bos = 1;
		else if (!strcmp(a, "--special")) o.special = 1;
		else if (!strcmp(a, "--last")) o.last = 1;
		else if (!strcmp(a, "--stop-eog")) o.stop_eog = 1;
		else if (!strcmp(a, "--defaults")) o.defaults = 1;
		else if (!strcmp(a, "--verbose")) verbose = 1;
		else usage();
	}
	if (argc - i < 2 || o.threads < 1) usage();
	const char *cmd = argv[i], *model = argv[i + 1];

	llama_log_set(log_cb, NULL);
	load_backends(argv[0], o.cpu);
	llama_backend_init();

	if (!strcmp(cmd, "info")) cmd_info(model, &o);
	else if (!strcmp(cmd, "tokenize")) cmd_tokenize(model, &o);
	else if (!strcmp(cmd, "detokenize")) cmd_detokenize(model, &o);
	else if (!strcmp(cmd, "logits")) cmd_logits(model, &o);
	else if (!strcmp(cmd, "greedy")) {
		if (argc - i < 3) usage();
		int n = atoi(argv[i + 2]);
		if (n < 1) die("greedy: N must be at least 1");
		cmd_greedy(model, &o, n);
	} else usage();

	llama_backend_free();
	if (fflush(stdout) != 0) die("write failed");
	return 0;
}
