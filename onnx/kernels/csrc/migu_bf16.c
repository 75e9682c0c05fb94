// migu_bf16: oneDNN matrix products for migu's training graphs —
// bfloat16, and float32 where oneDNN beats ORT's MLAS — an optional
// companion of migu_kernels.c built only where oneDNN's headers
// are installed (Debian's libdnnl-dev; scripts/bf16.sh), loaded into a stock
// ONNX Runtime through its custom-operator C API. Four ops, domain
// "ai.migu.bf16" (ORT refuses a second library registering migu_kernels'
// "ai.migu"), opset 1:
//
//   MatMulBF16(A, B[, Bias]; transA, transB) -> Y float32
//       Y = op(A) · op(B) (+ Bias), op a transpose where the flag is set.
//       A is [..., M, K] (transA 0: leading axes are flattened into M) or
//       [K, M] (transA 1, 2-D only); B is [K, N] (transB 0) or [N, K].
//       A and B are float32 (rounded to bfloat16 here, to nearest even) or
//       already bfloat16 (frozen weights a model folder stores in bf16).
//       The optional Bias is float32 [N], added to every row of the
//       float32 sums before Y is written: a linear layer's bias, which
//       would otherwise be an Add over all of Y (onnx/kernels/bias.go).
//
//   MatMulF32(A, B[, Bias]; transA, transB) -> Y float32
//       The same product in float32, operands as they are (a bf16 operand
//       is widened, exactly): oneDNN's float32 matmul in place of ORT's
//       MLAS, for the products where it was measured faster (forward
//       products and weight gradients on Ice Lake; onnx/kernels/f32.go).
//
//   BatchMatMul(A, B; permA, permB, permY, bf16, alpha) -> Y float32
//       Y = alpha · transpose(transpose(A, permA) · transpose(B, permB), permY)
//       for 4-D A and B, the product over the last two axes and batched
//       over the first two (an axis of size 1 broadcasts), as ONNX's
//       Transpose and MatMul would compute it; perms absent are the
//       identity. oneDNN reads the transposed operands and writes Y
//       through strides, so attention's head transposes
//       ([batch, tokens, heads, dim] ⇄ [batch, heads, tokens, dim]) cost
//       nothing (onnx/kernels/batch.go folds them in). bf16 1 rounds the
//       operands to bfloat16 as MatMulBF16 does. alpha (default 1)
//       scales the float32 sums: attention's 1/sqrt(d) where that is a
//       power of two, so the same bits as scaling an operand.
//
//   ToBF16(X) -> Y bfloat16
//       X (float32, any shape) rounded to bfloat16 as MatMulBF16 rounds
//       its operands. Where several bf16 products read one float32 value
//       (a weight: its forward product and its input gradient; a layer's
//       input: the query, key and value products and their weight
//       gradients), the training graph rounds it once and hands them the
//       bf16 copy (onnx/kernels/bf16_share.go): the same bits, read as
//       they are.
//
// On CPUs with AMX-BF16 or AVX-512 BF16 the product is oneDNN's bf16 matmul
// with float32 accumulation, on those units. Elsewhere oneDNN would emulate
// bf16 (measured 2.6-3.8x the CPU time of float32 on Ice Lake), so the op
// rounds the operands to bf16 values kept in float32 and runs oneDNN's
// float32 matmul: the same numbers up to the order of the float32 sums (a
// product of two bf16 values is exact in float32), at about float32 speed
// (native_bf16 below). Either way the rounding is extra work over fp32,
// which is why migu warns where the CPU lacks bf16 units.
//
// The work runs on ONNX Runtime's intra-op threads: the float32 → bf16
// rounding, and the product cut into blocks of Y, each one oneDNN call on
// one thread (matmul below).

#include <cpuid.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

// Debian's oneDNN runs on OpenMP: a block asks it for one thread, the one
// ORT runs the block on. Other oneDNN builds use their own pools.
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#define ONE_THREAD() omp_set_num_threads(1)
#else
#define ONE_THREAD() ((void)0)
#endif

#include "onnxruntime_c_api.h"
#include "ort_op.h"

static const OrtApi *api;

// Errors are made without the op's name; compute puts it in front (named).
static OrtStatus *fail(const char *msg) { return api->CreateStatus(ORT_INVALID_ARGUMENT, msg); }

static OrtStatus *dnnl_fail(const char *what, dnnl_status_t st) {
	char buf[256];
	snprintf(buf, sizeof buf, "oneDNN %s failed (status %d)", what, (int)st);
	return api->CreateStatus(ORT_FAIL, buf);
}

// named returns s with "ai.migu.bf16.<op>: " in front of its message.
static OrtStatus *named(const char *op, OrtStatus *s) {
	if (s == NULL) return NULL;
	char buf[640];
	snprintf(buf, sizeof buf, "ai.migu.bf16.%s: %s", op, api->GetErrorMessage(s));
	OrtErrorCode code = api->GetErrorCode(s);
	api->ReleaseStatus(s);
	return api->CreateStatus(code, buf);
}

enum { MAX_RANK = 8 };

typedef struct {
	void *data;
	int64_t dims[MAX_RANK];
	size_t rank;
	int64_t count;
	ONNXTensorElementDataType type;
} tensor;

static OrtStatus *input(OrtKernelContext *ctx, size_t i, tensor *t) {
	const OrtValue *v = NULL;
	TRY(api->KernelContext_GetInput(ctx, i, &v));
	if (v == NULL) return fail("a required input is missing");
	OrtTensorTypeAndShapeInfo *info = NULL;
	TRY(api->GetTensorTypeAndShape(v, &info));
	OrtStatus *s = api->GetDimensionsCount(info, &t->rank);
	if (s == NULL && t->rank > MAX_RANK) s = fail("tensor rank above 8");
	if (s == NULL) s = api->GetDimensions(info, t->dims, t->rank);
	if (s == NULL) s = api->GetTensorElementType(info, &t->type);
	api->ReleaseTensorTypeAndShapeInfo(info);
	if (s != NULL) return s;
	if (t->type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && t->type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16)
		return fail("inputs must be float32 or bfloat16");
	t->count = 1;
	for (size_t i = 0; i < t->rank; i++) t->count *= t->dims[i];
	return api->GetTensorMutableData((OrtValue *)v, &t->data);
}

// to_bf16 rounds float32 to bfloat16, to nearest even; NaN stays NaN (the
// rounding of internal/half.F32ToBF16).
VECTOR static void to_bf16(const float *x, uint16_t *y, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		uint32_t b;
		memcpy(&b, &x[i], sizeof b);
		uint16_t h = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
		if ((b & 0x7fffffffu) > 0x7f800000u) h = (uint16_t)((b >> 16) | 0x40u);
		y[i] = h;
	}
}

// round_f32 rounds float32 to the nearest bfloat16 value, kept in float32
// (the low 16 bits cleared): the operands of the float32 path.
VECTOR static void round_f32(const float *x, float *y, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		uint32_t b;
		memcpy(&b, &x[i], sizeof b);
		uint32_t h = ((b + 0x7fffu + ((b >> 16) & 1u)) >> 16) << 16;
		if ((b & 0x7fffffffu) > 0x7f800000u) h = (b & 0xffff0000u) | 0x00400000u;
		memcpy(&y[i], &h, sizeof h);
	}
}

// widen_f32 turns bfloat16 into float32 (exact).
VECTOR static void widen_f32(const uint16_t *x, float *y, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		uint32_t h = (uint32_t)x[i] << 16;
		memcpy(&y[i], &h, sizeof h);
	}
}

enum { CONVERT_BLOCK = 1 << 16 };

// convert_job converts n values of x into y: float32 to bf16 (native
// path), or to bf16-valued float32 from float32 or from bf16 (float32 path).
typedef struct {
	const void *x;
	void *y;
	int64_t n;
	int to_f32, from_bf16;
} convert_job;

static void convert_block(void *p, size_t b) {
	const convert_job *j = p;
	int64_t start = (int64_t)b * CONVERT_BLOCK, n = j->n - start < CONVERT_BLOCK ? j->n - start : CONVERT_BLOCK;
	if (!j->to_f32)
		to_bf16((const float *)j->x + start, (uint16_t *)j->y + start, n);
	else if (j->from_bf16)
		widen_f32((const uint16_t *)j->x + start, (float *)j->y + start, n);
	else
		round_f32((const float *)j->x + start, (float *)j->y + start, n);
}

// operand gives t's values as the product reads them: bfloat16 (to_f32 0),
// bf16-valued float32 (to_f32 1, round 1) or float32 (to_f32 1, round 0).
// It is t's own data where that already is the form (a bf16 tensor on the
// native path, a float32 one unrounded), else a converted copy in *owned
// (freed by the caller).
static OrtStatus *operand(OrtKernelContext *ctx, const tensor *t, int to_f32, int round, const void **out,
                          void **owned) {
	*owned = NULL;
	int from_bf16 = t->type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
	if ((from_bf16 && !to_f32) || (!from_bf16 && !round)) {
		*out = t->data;
		return NULL;
	}
	size_t size = to_f32 ? sizeof(float) : sizeof(uint16_t);
	void *y = malloc((size_t)(t->count > 0 ? t->count : 1) * size);
	if (y == NULL) return api->CreateStatus(ORT_FAIL, "out of memory");
	*owned = y;
	*out = y;
	if (t->count == 0) return NULL;
	convert_job j = {.x = t->data, .y = y, .n = t->count, .to_f32 = to_f32, .from_bf16 = from_bf16};
	return api->KernelContext_ParallelFor(ctx, convert_block, (size_t)((t->count + CONVERT_BLOCK - 1) / CONVERT_BLOCK), 0, &j);
}

// The CPU engine is made once per process and shared by every kernel
// (oneDNN engines are thread-safe).
static dnnl_engine_t engine;
static dnnl_status_t engine_status;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

// async_signals are the signals a block masks while oneDNN runs: every one
// but the faults a bug would raise (which must still reach a handler).
// ORT's threads run the blocks, and a process-directed signal (SIGPROF of
// a Go CPU profile, SIGCHLD, SIGINT) may be delivered to any of them; a
// handler run inside oneDNN's JIT-compiled code corrupted the heap
// (onnx/kernels TestProductsSurviveSignals). Masked, it waits for the
// block's end or goes to another thread. Two syscalls per block, about
// 0.3 µs, against hundreds of µs of multiplying (1500 blocks of 128×256, 0.4 ms, in
// a 470 ms llama-small step).
static sigset_t async_signals;

// cpus is the number of CPUs the process may run on, an upper bound of
// ORT's intra-op threads (its default is one per core).
static int64_t cpus = 1;

static void make_engine(void) {
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) cpus = CPU_COUNT(&set);
	sigfillset(&async_signals);
	int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT};
	for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&async_signals, faults[i]);
	engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

// Each thread that runs blocks keeps one oneDNN stream (streams are not
// shared between threads) and one scratchpad buffer, grown to the largest
// a block has needed; ORT's pool threads live as long as the process.
static __thread dnnl_stream_t thread_stream;
static __thread void *thread_scratch;
static __thread size_t thread_scratch_size;

// A product is cut into blocks of Y, run on ONNX Runtime's intra-op
// threads (KernelContext_ParallelFor), each block by oneDNN on the thread
// that runs it: the product uses the threads --threads gives ORT, not a
// second pool of its own. (Debian's oneDNN runs on OpenMP; set to one
// thread on ORT's threads, it works where it is called.)
//
// Blocks are BLOCK_M rows by up to BLOCK_N columns — a product's columns
// in the fewest equal blocks of at most BLOCK_N — halved while the product
// has fewer blocks than the CPUs the process may run on (block_size).
// oneDNN packs or copies its operands' shares on every call: op(B)'s
// columns once per row block, op(A)'s rows (a transposed one too: the
// weight gradients') once per column block, so wide blocks copy A less,
// and BLOCK_N bounds the packed B a thread holds. On Zen 4 (2 threads,
// 512×512×1376) 256×512 blocks ran the bf16 products at 380–405 GFLOP/s
// against 350–375 with 128×256 ones. On a Xeon with AMX (2 threads, the
// small presets' steps paired in one process, each way round twice)
// these blocks against 256×512 ones changed float32 steps by less than
// the pairing's own ±3 % and made roberta's bf16 steps 4–9 % shorter
// (0.910 and 0.959 new ÷ old; 0.999 and 1.021 old ÷ new).
enum { BLOCK_M = 256, BLOCK_N = 2048, MIN_BLOCK = 64, CACHE = 16 };

// A batched product (BatchMatMul) is cut into about BATCH_BLOCKS blocks
// per CPU, each one oneDNN call over several heads' matrices: the
// attention products of the small presets (4 × 8 heads of 128×128×64)
// are too small to cut each into blocks of Y.
enum { BATCH_BLOCKS = 4 };

// block_shape is one oneDNN call: Y[batch, m, n] = op(A)[batch, m, k] ·
// op(B)[batch, k, n] (batch 0: a 2-D product), with the element strides
// of (batch, row, column) of op(A), op(B) and Y — transposes and
// head-major views of token-major tensors are strides. a_batch and
// b_batch are batch or 1 (oneDNN broadcasts an operand of batch 1).
typedef struct {
	int64_t batch, m, n, k, a_batch, b_batch;
	int64_t as[3], bs[3], ys[3];
	int64_t bias; // 1: a float32 bias [n] is added (2-D products only)
} block_shape;

// prim is a oneDNN matmul primitive for one block shape; in the cache,
// refs counts the blocks running it and used orders entries by last use.
typedef struct {
	block_shape sh;
	dnnl_primitive_t prim;
	dnnl_memory_desc_t a_md, b_md, y_md, bias_md, scratch_md;
	int refs;
	uint64_t used;
} prim;

typedef struct {
	const char *name; // the op's
	int64_t trans_a, trans_b;
	// BatchMatMul's permA, permB and permY (batched 1).
	int batched;
	int64_t perm[3][4];
	float alpha;
	// f32 picks oneDNN's float32 matmul: for MatMulBF16 (and BatchMatMul
	// with bf16 1) on the operands rounded to bf16 values (see
	// native_bf16), for MatMulF32 on the operands as they are (round 0).
	int f32, round;
	// cast marks ToBF16, which runs no product.
	int cast;
	// cache holds the primitives of the block shapes met last (a full
	// block and its edges: up to four per product shape, which changes
	// with the batch's token count), guarded by mu; the least recently
	// used one that no block is running makes room. Primitives are
	// immutable: threads execute one at once.
	pthread_mutex_t mu;
	prim cache[CACHE];
	int cached;
	uint64_t clock;
} kernel;

static dnnl_status_t make_prim(const kernel *kk, block_shape sh, prim *out) {
	out->sh = sh;
	int nd = sh.batch > 0 ? 3 : 2;
	int64_t dims[3][3] = {{sh.a_batch, sh.m, sh.k}, {sh.b_batch, sh.k, sh.n}, {sh.batch, sh.m, sh.n}};
	const int64_t *strides[3] = {sh.as, sh.bs, sh.ys};
	dnnl_memory_desc_t *mds[3] = {&out->a_md, &out->b_md, &out->y_md};
	dnnl_data_type_t types[3] = {kk->f32 ? dnnl_f32 : dnnl_bf16, kk->f32 ? dnnl_f32 : dnnl_bf16, dnnl_f32};
	dnnl_status_t st = dnnl_success;
	for (int i = 0; i < 3 && st == dnnl_success; i++) {
		// A 2-D product's descriptors take the last two entries.
		dnnl_dims_t d, str;
		memcpy(d, dims[i] + 3 - nd, (size_t)nd * sizeof d[0]);
		memcpy(str, strides[i] + 3 - nd, (size_t)nd * sizeof str[0]);
		st = dnnl_memory_desc_init_by_strides(mds[i], nd, d, types[i], str);
	}
	if (st != dnnl_success) return st;
	memset(&out->bias_md, 0, sizeof out->bias_md);
	if (sh.bias) {
		dnnl_dims_t d = {1, sh.n};
		if ((st = dnnl_memory_desc_init_by_tag(&out->bias_md, 2, d, dnnl_f32, dnnl_ab)) != dnnl_success) return st;
	}
	dnnl_matmul_desc_t desc;
	if ((st = dnnl_matmul_desc_init(&desc, &out->a_md, &out->b_md, sh.bias ? &out->bias_md : NULL, &out->y_md)) !=
	    dnnl_success)
		return st;
	// The scratchpad is the caller's (thread_scratch): oneDNN's own is one
	// buffer per creating thread, unsafe for a primitive that another
	// thread runs, or that two threads run at once.
	dnnl_primitive_attr_t attr = NULL;
	if ((st = dnnl_primitive_attr_create(&attr)) != dnnl_success) return st;
	st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
	if (st == dnnl_success && kk->alpha != 1.0f) st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &kk->alpha);
	dnnl_primitive_desc_t pd = NULL;
	if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
	dnnl_primitive_attr_destroy(attr);
	if (st != dnnl_success) return st;
	const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (scratch != NULL)
		out->scratch_md = *scratch;
	else
		memset(&out->scratch_md, 0, sizeof out->scratch_md);
	st = dnnl_primitive_create(&out->prim, pd);
	dnnl_primitive_desc_destroy(pd);
	return st;
}

// get_prim finds the block shape's primitive in the kernel's cache or
// makes it, and tells where it is: *slot is its cache entry (release it
// with put_prim), or -1 when every entry is running and the caller owns
// (and destroys) the primitive.
static dnnl_status_t get_prim(kernel *kk, block_shape sh, prim *out, int *slot) {
	*slot = -1;
	pthread_mutex_lock(&kk->mu);
	kk->clock++;
	for (int i = 0; i < kk->cached; i++) {
		if (memcmp(&kk->cache[i].sh, &sh, sizeof sh) == 0) {
			kk->cache[i].refs++;
			kk->cache[i].used = kk->clock;
			*out = kk->cache[i];
			*slot = i;
			pthread_mutex_unlock(&kk->mu);
			return dnnl_success;
		}
	}
	dnnl_status_t st = make_prim(kk, sh, out);
	if (st == dnnl_success) {
		int victim = -1;
		if (kk->cached < CACHE)
			victim = kk->cached;
		else
			for (int i = 0; i < CACHE; i++)
				if (kk->cache[i].refs == 0 && (victim < 0 || kk->cache[i].used < kk->cache[victim].used)) victim = i;
		if (victim >= 0) {
			if (victim < kk->cached)
				dnnl_primitive_destroy(kk->cache[victim].prim);
			else
				kk->cached++;
			out->refs = 1;
			out->used = kk->clock;
			kk->cache[victim] = *out;
			*slot = victim;
		}
	}
	pthread_mutex_unlock(&kk->mu);
	return st;
}

// put_prim releases a cache entry get_prim gave.
static void put_prim(kernel *kk, int slot) {
	pthread_mutex_lock(&kk->mu);
	kk->cache[slot].refs--;
	pthread_mutex_unlock(&kk->mu);
}

// job is one product cut into blocks, each run by one ORT thread; a
// failed block records its oneDNN status and the stage it failed at.
typedef struct {
	kernel *kk;
	const char *a, *b; // bf16 or float32 elements of size esize
	size_t esize;
	const float *bias; // [n], or NULL
	float *y;
	int64_t m, k, n;
	// 2-D products: bm × bn blocks of Y (block_size).
	int64_t bm, bn, blocks_n;
	// Batched products (BatchMatMul): d0 × d1 matrices; a block is d1
	// (heads) of them, from one index of d0, in ranges of hb. as, bs
	// and ys are the element strides of op(A) [d0, d1, m, k], op(B)
	// [d0, d1, k, n] and Y [d0, d1, m, n]; a broadcast batch axis of A
	// or B has size 1 (a_dims, b_dims) and stride 0.
	int64_t d0, d1, hb, blocks_h, a_dims[2], b_dims[2];
	int64_t as[4], bs[4], ys[4];
	_Atomic dnnl_status_t status;
	_Atomic int failed_at; // 0: none; 1: primitive, 2: memory or stream, 3: execution
} matmul_job;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// block_size picks the block of an m×n product: BLOCK_M rows by n's
// columns in ceil(n / BLOCK_N) equal blocks (rounded up to 64), its
// columns then its rows halved in turn (not below MIN_BLOCK) while the
// product has fewer blocks than cpus.
static void block_size(int64_t m, int64_t n, int64_t *bm, int64_t *bn) {
	int64_t nb = n > BLOCK_N ? ceil_div(n, BLOCK_N) : 1;
	*bm = BLOCK_M, *bn = ceil_div(ceil_div(n, nb), 64) * 64;
	for (int cols = 1; ceil_div(m, *bm) * ceil_div(n, *bn) < cpus; cols = !cols) {
		if (cols && *bn > MIN_BLOCK && *bn < 2 * n)
			*bn /= 2;
		else if (*bm > MIN_BLOCK && *bm < 2 * m)
			*bm /= 2;
		else if (*bn > MIN_BLOCK && *bn < 2 * n)
			*bn /= 2;
		else
			break;
	}
}

// run_block runs one block of j, sh, from the block's origins a, b, bias
// (when sh.bias) and y, on the calling thread.
static void run_block(matmul_job *j, block_shape sh, const char *a, const char *b, const float *bias, float *y) {
	ONE_THREAD();
	prim pr;
	int slot = -1, stage = 1;
	dnnl_status_t st = get_prim(j->kk, sh, &pr, &slot);
	int made = st == dnnl_success;
	dnnl_memory_t am = NULL, bm = NULL, ym = NULL, cm = NULL, sm = NULL;
	if (st == dnnl_success) stage = 2, st = dnnl_memory_create(&am, &pr.a_md, engine, (void *)a);
	if (st == dnnl_success) st = dnnl_memory_create(&bm, &pr.b_md, engine, (void *)b);
	if (st == dnnl_success) st = dnnl_memory_create(&ym, &pr.y_md, engine, y);
	if (st == dnnl_success && sh.bias) st = dnnl_memory_create(&cm, &pr.bias_md, engine, (void *)bias);
	if (st == dnnl_success && thread_stream == NULL) st = dnnl_stream_create(&thread_stream, engine, dnnl_stream_default_flags);
	size_t scratch = made ? dnnl_memory_desc_get_size(&pr.scratch_md) : 0;
	if (st == dnnl_success && scratch > thread_scratch_size) {
		free(thread_scratch);
		thread_scratch = NULL, thread_scratch_size = 0;
		if (posix_memalign(&thread_scratch, 64, scratch) != 0)
			st = dnnl_out_of_memory;
		else
			thread_scratch_size = scratch;
	}
	if (st == dnnl_success && scratch > 0) st = dnnl_memory_create(&sm, &pr.scratch_md, engine, thread_scratch);
	if (st == dnnl_success) {
		dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, ym}};
		int nargs = 3;
		if (sm != NULL) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, sm};
		if (cm != NULL) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, cm};
		stage = 3;
		sigset_t old;
		pthread_sigmask(SIG_BLOCK, &async_signals, &old);
		st = dnnl_primitive_execute(pr.prim, thread_stream, nargs, args);
		if (st == dnnl_success) st = dnnl_stream_wait(thread_stream);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (sm) dnnl_memory_destroy(sm);
	if (cm) dnnl_memory_destroy(cm);
	if (ym) dnnl_memory_destroy(ym);
	if (bm) dnnl_memory_destroy(bm);
	if (am) dnnl_memory_destroy(am);
	if (made && slot >= 0)
		put_prim(j->kk, slot);
	else if (made)
		dnnl_primitive_destroy(pr.prim);
	if (st != dnnl_success) {
		j->status = st;
		j->failed_at = stage;
	}
}

// matmul_block runs block blk of a 2-D product.
static void matmul_block(void *p, size_t blk) {
	matmul_job *j = p;
	const kernel *kk = j->kk;
	int64_t m0 = (int64_t)(blk / (size_t)j->blocks_n) * j->bm, n0 = (int64_t)(blk % (size_t)j->blocks_n) * j->bn;
	block_shape sh;
	memset(&sh, 0, sizeof sh); // the cache compares shapes bytewise
	sh.m = j->m - m0 < j->bm ? j->m - m0 : j->bm;
	sh.n = j->n - n0 < j->bn ? j->n - n0 : j->bn;
	sh.k = j->k;
	sh.bias = j->bias != NULL;
	int64_t lda = kk->trans_a ? j->m : j->k, ldb = kk->trans_b ? j->k : j->n;
	sh.as[1] = kk->trans_a ? 1 : lda, sh.as[2] = kk->trans_a ? lda : 1;
	sh.bs[1] = kk->trans_b ? 1 : ldb, sh.bs[2] = kk->trans_b ? ldb : 1;
	sh.ys[1] = j->n, sh.ys[2] = 1;
	// Block origins: rows m0 of op(A), columns n0 of op(B), element (m0, n0) of Y.
	const char *a = j->a + (size_t)(m0 * sh.as[1]) * j->esize;
	const char *b = j->b + (size_t)(n0 * sh.bs[2]) * j->esize;
	run_block(j, sh, a, b, j->bias != NULL ? j->bias + n0 : NULL, j->y + m0 * j->n + n0);
}

// batch_block runs block blk of a batched product: heads h0 … h0+hb-1
// (or fewer, at the end) of batch index i0.
static void batch_block(void *p, size_t blk) {
	matmul_job *j = p;
	int64_t i0 = (int64_t)blk / j->blocks_h, h0 = ((int64_t)blk % j->blocks_h) * j->hb;
	block_shape sh;
	memset(&sh, 0, sizeof sh);
	sh.batch = j->d1 - h0 < j->hb ? j->d1 - h0 : j->hb;
	sh.m = j->m, sh.n = j->n, sh.k = j->k;
	sh.a_batch = j->a_dims[1] == 1 ? 1 : sh.batch;
	sh.b_batch = j->b_dims[1] == 1 ? 1 : sh.batch;
	memcpy(sh.as, j->as + 1, sizeof sh.as);
	memcpy(sh.bs, j->bs + 1, sizeof sh.bs);
	memcpy(sh.ys, j->ys + 1, sizeof sh.ys);
	const char *a = j->a + (size_t)(i0 * j->as[0] + h0 * j->as[1]) * j->esize;
	const char *b = j->b + (size_t)(i0 * j->bs[0] + h0 * j->bs[1]) * j->esize;
	run_block(j, sh, a, b, NULL, j->y + i0 * j->ys[0] + h0 * j->ys[1]);
}

static const char *stages[] = {"", "primitive creation", "memory or stream creation", "execution"};

// run_job runs a product's blocks on ORT's threads.
static OrtStatus *run_job(OrtKernelContext *ctx, matmul_job *j, void (*block)(void *, size_t), size_t blocks) {
	pthread_once(&engine_once, make_engine);
	if (engine_status != dnnl_success) return dnnl_fail("engine creation", engine_status);
	j->esize = j->kk->f32 ? sizeof(float) : sizeof(uint16_t);
	j->status = dnnl_success;
	j->failed_at = 0;
	TRY(api->KernelContext_ParallelFor(ctx, block, blocks, 0, j));
	return j->failed_at == 0 ? NULL : dnnl_fail(stages[j->failed_at], j->status);
}

// matmul runs y[M,N] = op(a) · op(b) (+ bias[N], where not NULL) with
// bf16 or float32 operands and float32 accumulation and output, block by
// block on ORT's threads.
static OrtStatus *matmul(OrtKernelContext *ctx, kernel *kk, const void *a, const void *b, const float *bias, float *y,
                         int64_t m, int64_t k, int64_t n) {
	pthread_once(&engine_once, make_engine);
	matmul_job j = {.kk = kk, .a = a, .b = b, .bias = bias, .y = y, .m = m, .k = k, .n = n};
	block_size(m, n, &j.bm, &j.bn);
	j.blocks_n = ceil_div(n, j.bn);
	return run_job(ctx, &j, matmul_block, (size_t)(ceil_div(m, j.bm) * j.blocks_n));
}

// native_bf16 tells whether the product runs as a bf16 product in oneDNN
// (1) or as a float32 product of the bf16-rounded operands (0). Both give
// the same numbers up to the order of the float32 sums: a product of two
// bf16 values is exact in float32. Native pays where the bf16 units
// multiply more per cycle than the float32 FMAs: AMX-BF16, and AVX512-BF16
// on AMD (Zen 4 measured 0.6-0.76x of fp32's step). On Intel without AMX
// (Cooper Lake; Sapphire or Emerald Rapids with AMX hidden, as in some
// virtual machines) two float32 FMA ports match the one bf16 dot-product
// port, and oneDNN's bf16 product measured half its float32 speed (80
// against 155 GFLOP/s a thread on an Emerald Rapids); without bf16 units
// oneDNN emulates them, slower still. kernels.BF16Hardware.Native in Go
// decides alike. $MIGU_BF16_PATH=native or f32 forces a path (tests,
// measurements); it is read when a session creates its kernels.
static int native_bf16(void) {
	const char *force = getenv("MIGU_BF16_PATH");
	if (force != NULL && strcmp(force, "native") == 0) return 1;
	if (force != NULL && strcmp(force, "f32") == 0) return 0;
	int isa = (int)dnnl_get_effective_cpu_isa();
	if ((isa & (int)dnnl_cpu_isa_avx512_core_amx) == (int)dnnl_cpu_isa_avx512_core_amx) return 1;
	if ((isa & (int)dnnl_cpu_isa_avx512_core_bf16) != (int)dnnl_cpu_isa_avx512_core_bf16) return 0;
	unsigned int eax, ebx, ecx, edx;
	// "AuthenticAMD" in EBX, EDX, ECX of leaf 0.
	return __get_cpuid(0, &eax, &ebx, &ecx, &edx) && ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;
}

static OrtStatus *compute_status(kernel *kk, OrtKernelContext *ctx) {
	tensor a, b;
	TRY(input(ctx, 0, &a));
	TRY(input(ctx, 1, &b));
	if (b.rank != 2) return fail("B must be 2-D");
	if (a.rank < 2 || (kk->trans_a && a.rank != 2)) return fail("A must be [..., M, K], or [K, M] with transA");
	int64_t k = kk->trans_a ? a.dims[0] : a.dims[a.rank - 1], m = kk->trans_a ? a.dims[1] : 1;
	for (size_t i = 0; !kk->trans_a && i + 1 < a.rank; i++) m *= a.dims[i];
	int64_t bk = kk->trans_b ? b.dims[1] : b.dims[0], n = kk->trans_b ? b.dims[0] : b.dims[1];
	if (bk != k) return fail("the inner dimensions of op(A) and op(B) differ");
	const float *bias = NULL;
	size_t nin = 0;
	TRY(api->KernelContext_GetInputCount(ctx, &nin));
	const OrtValue *bv = NULL;
	if (nin > 2) TRY(api->KernelContext_GetInput(ctx, 2, &bv));
	if (bv != NULL) {
		tensor c;
		TRY(input(ctx, 2, &c));
		if (c.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || c.rank != 1 || c.dims[0] != n)
			return fail("Bias must be float32 [N], N the columns of op(B)");
		bias = c.data;
	}
	int64_t ydims[MAX_RANK];
	size_t yrank = a.rank;
	if (kk->trans_a) {
		ydims[0] = m;
	} else {
		memcpy(ydims, a.dims, sizeof ydims);
	}
	ydims[yrank - 1] = n;
	OrtValue *yv = NULL;
	float *y = NULL;
	TRY(api->KernelContext_GetOutput(ctx, 0, ydims, yrank, &yv));
	TRY(api->GetTensorMutableData(yv, (void **)&y));
	if (m == 0 || n == 0) return NULL;
	if (k == 0) {
		for (int64_t i = 0; i < m; i++)
			for (int64_t c = 0; c < n; c++) y[i * n + c] = bias != NULL ? bias[c] : 0.0f;
		return NULL;
	}
	const void *ab, *bb;
	void *aown, *bown = NULL;
	OrtStatus *s = operand(ctx, &a, kk->f32, kk->round, &ab, &aown);
	if (s == NULL) s = operand(ctx, &b, kk->f32, kk->round, &bb, &bown);
	if (s == NULL) s = matmul(ctx, kk, ab, bb, bias, y, m, k, n);
	free(aown);
	free(bown);
	return s;
}

// cast_status is ToBF16's compute.
static OrtStatus *cast_status(OrtKernelContext *ctx) {
	tensor x;
	TRY(input(ctx, 0, &x));
	if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return fail("X must be float32");
	OrtValue *yv = NULL;
	uint16_t *y = NULL;
	TRY(api->KernelContext_GetOutput(ctx, 0, x.dims, x.rank, &yv));
	TRY(api->GetTensorMutableData(yv, (void **)&y));
	if (x.count == 0) return NULL;
	convert_job j = {.x = x.data, .y = y, .n = x.count};
	return api->KernelContext_ParallelFor(ctx, convert_block, (size_t)((x.count + CONVERT_BLOCK - 1) / CONVERT_BLOCK), 0, &j);
}

// dense_strides gives the element strides of a row-major tensor.
static void dense_strides(const int64_t *dims, int64_t *strides) {
	strides[3] = 1;
	for (int i = 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
}

// batch_status is BatchMatMul's compute: every operand is a strided view
// of its tensor, so the transposes cost nothing.
static OrtStatus *batch_status(kernel *kk, OrtKernelContext *ctx) {
	tensor a, b;
	TRY(input(ctx, 0, &a));
	TRY(input(ctx, 1, &b));
	if (a.rank != 4 || b.rank != 4) return fail("A and B must be 4-D");
	pthread_once(&engine_once, make_engine);
	matmul_job j = {.kk = kk};
	int64_t sa[4], sb[4], ad[4], bd[4];
	dense_strides(a.dims, sa);
	dense_strides(b.dims, sb);
	for (int i = 0; i < 4; i++) {
		ad[i] = a.dims[kk->perm[0][i]], j.as[i] = sa[kk->perm[0][i]];
		bd[i] = b.dims[kk->perm[1][i]], j.bs[i] = sb[kk->perm[1][i]];
	}
	if (ad[3] != bd[2]) return fail("the inner dimensions of op(A) and op(B) differ");
	int64_t yd[4] = {ad[0], ad[1], ad[2], bd[3]};
	for (int i = 0; i < 2; i++) {
		if (ad[i] != bd[i] && ad[i] != 1 && bd[i] != 1) return fail("the batch dimensions of op(A) and op(B) differ");
		if (ad[i] == 1) j.as[i] = 0;
		if (bd[i] == 1) j.bs[i] = 0;
		yd[i] = ad[i] == 1 ? bd[i] : ad[i];
		j.a_dims[i] = ad[i], j.b_dims[i] = bd[i];
	}
	// Y = transpose(op(A)·op(B), permY): axis i of Y is axis permY[i] of
	// the product.
	int64_t ydims[4], ys[4];
	for (int i = 0; i < 4; i++) ydims[i] = yd[kk->perm[2][i]];
	dense_strides(ydims, ys);
	for (int i = 0; i < 4; i++) j.ys[kk->perm[2][i]] = ys[i];
	OrtValue *yv = NULL;
	TRY(api->KernelContext_GetOutput(ctx, 0, ydims, 4, &yv));
	TRY(api->GetTensorMutableData(yv, (void **)&j.y));
	int64_t count = yd[0] * yd[1] * yd[2] * yd[3];
	if (count == 0) return NULL;
	if (ad[3] == 0) {
		memset(j.y, 0, (size_t)count * sizeof *j.y);
		return NULL;
	}
	j.m = yd[2], j.n = yd[3], j.k = ad[3], j.d0 = yd[0], j.d1 = yd[1];
	// oneDNN writes a Y whose columns are not contiguous with its
	// reference code, a thousand times slower; a Y with contiguous rows
	// (a product written transposed, as attention's key gradient is) is
	// computed as Yᵀ = op(B)ᵀ · op(A)ᵀ instead.
	int swap = j.ys[3] != 1 && j.ys[2] == 1;
	if (swap) {
		int64_t t;
		for (int i = 0; i < 4; i++) t = j.as[i], j.as[i] = j.bs[i], j.bs[i] = t;
		for (int i = 0; i < 2; i++) t = j.a_dims[i], j.a_dims[i] = j.b_dims[i], j.b_dims[i] = t;
		t = j.as[2], j.as[2] = j.as[3], j.as[3] = t;
		t = j.bs[2], j.bs[2] = j.bs[3], j.bs[3] = t;
		t = j.ys[2], j.ys[2] = j.ys[3], j.ys[3] = t;
		t = j.m, j.m = j.n, j.n = t;
	}
	// About BATCH_BLOCKS blocks per CPU: whole batch indices where there
	// are enough of them, else each index's heads split.
	int64_t splits = ceil_div(BATCH_BLOCKS * cpus, j.d0);
	if (splits > j.d1) splits = j.d1;
	j.hb = ceil_div(j.d1, splits);
	j.blocks_h = ceil_div(j.d1, j.hb);
	const void *ab, *bb;
	void *aown, *bown = NULL;
	OrtStatus *s = operand(ctx, &a, kk->f32, kk->round, &ab, &aown);
	if (s == NULL) s = operand(ctx, &b, kk->f32, kk->round, &bb, &bown);
	j.a = swap ? bb : ab, j.b = swap ? ab : bb;
	if (s == NULL) s = run_job(ctx, &j, batch_block, (size_t)(j.d0 * j.blocks_h));
	free(aown);
	free(bown);
	return s;
}

// ---- ops ----

// ops are MatMulBF16, MatMulF32 and BatchMatMul, alike but for their
// names and their kernels' flags, and ToBF16.
enum { OP_BF16, OP_F32, OP_BATCH, OP_CAST, OPS };
static OrtCustomOp ops[OPS];
static const char *op_names[OPS] = {"MatMulBF16", "MatMulF32", "BatchMatMul", "ToBF16"};

static int64_t int_attr(const OrtKernelInfo *info, const char *name) {
	int64_t v = 0;
	OrtStatus *s = api->KernelInfoGetAttribute_int64(info, name, &v);
	if (s != NULL) {
		api->ReleaseStatus(s);
		return 0;
	}
	return v;
}

// perm_attr reads a permutation of the four axes; absent, it is the
// identity.
static OrtStatus *perm_attr(const OrtKernelInfo *info, const char *name, int64_t *perm) {
	for (int i = 0; i < 4; i++) perm[i] = i;
	size_t size = 0;
	OrtStatus *s = api->KernelInfoGetAttributeArray_int64(info, name, NULL, &size);
	if (s != NULL) {
		api->ReleaseStatus(s);
		return NULL;
	}
	char msg[64];
	snprintf(msg, sizeof msg, "%s must be a permutation of 0, 1, 2, 3", name);
	if (size != 4) return fail(msg);
	TRY(api->KernelInfoGetAttributeArray_int64(info, name, perm, &size));
	int seen = 0;
	for (int i = 0; i < 4; i++) {
		if (perm[i] < 0 || perm[i] > 3 || (seen >> perm[i] & 1)) return fail(msg);
		seen |= 1 << perm[i];
	}
	return NULL;
}

static OrtStatus *make_kernel(int op, const OrtKernelInfo *info, kernel *k) {
	k->name = op_names[op];
	k->alpha = 1.0f;
	if (op == OP_CAST) {
		k->cast = 1;
		return NULL;
	}
	k->trans_a = int_attr(info, "transA") != 0;
	k->trans_b = int_attr(info, "transB") != 0;
	k->round = op == OP_BF16;
	if (op == OP_BATCH) {
		k->batched = 1;
		OrtStatus *as = api->KernelInfoGetAttribute_float(info, "alpha", &k->alpha);
		if (as != NULL) api->ReleaseStatus(as);
		k->round = int_attr(info, "bf16") != 0;
		static const char *perms[3] = {"permA", "permB", "permY"};
		for (int i = 0; i < 3; i++) TRY(perm_attr(info, perms[i], k->perm[i]));
	}
	k->f32 = !k->round || !native_bf16();
	return NULL;
}

static OrtStatus *ORT_API_CALL create_kernel(const OrtCustomOp *o, const OrtApi *a, const OrtKernelInfo *info,
                                             void **out) {
	(void)a;
	int op = (int)(o - ops);
	kernel *k = calloc(1, sizeof *k);
	if (k == NULL) return named(op_names[op], api->CreateStatus(ORT_FAIL, "out of memory"));
	OrtStatus *s = make_kernel(op, info, k);
	if (s != NULL) {
		free(k);
		return named(op_names[op], s);
	}
	pthread_mutex_init(&k->mu, NULL);
	*out = k;
	return NULL;
}

static OrtStatus *ORT_API_CALL compute(void *k, OrtKernelContext *ctx) {
	kernel *kk = k;
	if (kk->cast) return named(kk->name, cast_status(ctx));
	return named(kk->name, kk->batched ? batch_status(kk, ctx) : compute_status(kk, ctx));
}
static void ORT_API_CALL destroy(void *k) {
	kernel *kk = k;
	for (int i = 0; i < kk->cached; i++) dnnl_primitive_destroy(kk->cache[i].prim);
	pthread_mutex_destroy(&kk->mu);
	free(kk);
}
static const char *ORT_API_CALL get_name(const OrtCustomOp *o) { return op_names[o - ops]; }

static const char *ORT_API_CALL get_provider(const OrtCustomOp *o) {
	(void)o;
	return "CPUExecutionProvider";
}
// The products' inputs are typed UNDEFINED: each may be float32 or
// bfloat16 (checked in Compute), which ORT allows custom ops.
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp *o, size_t i) {
	(void)i;
	return o - ops == OP_CAST ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}
// MatMulBF16 and MatMulF32 take an optional third input, Bias.
static size_t ORT_API_CALL input_count(const OrtCustomOp *o) {
	int op = (int)(o - ops);
	return op == OP_CAST ? 1 : op == OP_BATCH ? 2 : 3;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_char(const OrtCustomOp *o, size_t i) {
	(void)o;
	return i == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

static ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp *o, size_t i) {
	(void)i;
	return o - ops == OP_CAST ? ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

static size_t ORT_API_CALL output_count(const OrtCustomOp *o) {
	(void)o;
	return 1;
}

static OrtCustomOpDomain *domain;
static OrtStatus *domain_status;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void make_domain(void) {
	domain_status = api->CreateCustomOpDomain("ai.migu.bf16", &domain);
	for (int i = 0; i < OPS && domain_status == NULL; i++) {
		OrtCustomOp *op = &ops[i];
		op_defaults(op, MIGU_ORT_API);
		op->CreateKernelV2 = create_kernel;
		op->KernelComputeV2 = compute;
		op->KernelDestroy = destroy;
		op->GetName = get_name;
		op->GetExecutionProviderType = get_provider;
		op->GetInputType = input_type;
		op->GetInputTypeCount = input_count;
		op->GetInputCharacteristic = input_char;
		op->GetOutputType = output_type;
		op->GetOutputTypeCount = output_count;
		domain_status = api->CustomOpDomain_Add(domain, op);
	}
}

// RegisterCustomOps is the entry point ONNX Runtime's RegisterCustomOpsLibrary
// looks for; migu calls it directly (onnx/ort), after migu_kernels' own.
MIGU_EXPORT OrtStatus *ORT_API_CALL RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base) {
	if (api == NULL) {
		api = base->GetApi(MIGU_ORT_API);
		if (api == NULL) return NULL;
	}
	pthread_once(&once, make_domain);
	if (domain_status != NULL) return api->CreateStatus(ORT_FAIL, api->GetErrorMessage(domain_status));
	return api->AddCustomOpDomain(options, domain);
}

// MiguBF16Version tells the loader which op set this build provides.
// It changes with the op set, together with BF16LibVersion in onnx/kernels/bf16.go
// (the Go side refuses a library reporting another version).
MIGU_EXPORT const char *MiguBF16Version(void) { return "7"; }

// MiguBF16Path names the path bf16 products take in this process,
// "native" or "f32" (native_bf16), so that a test can check that
// kernels.BF16Hardware.Native in Go decides as the library does.
MIGU_EXPORT const char *MiguBF16Path(void) { return native_bf16() ? "native" : "f32"; }
