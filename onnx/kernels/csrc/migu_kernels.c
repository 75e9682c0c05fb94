// migu_kernels: fused CPU kernels for migu's training graphs, loaded into a
// stock ONNX Runtime through its custom-operator C API. Every op lives in the
// domain "ai.migu", opset 1, and takes and gives float32 tensors:
//
//   RMSNorm(X[..., d], W[d]; epsilon) -> Y[..., d], InvRMS[..., 1]
//       Y = X * InvRMS * W, InvRMS = 1 / sqrt(mean(X^2 over the last axis) + epsilon)
//   RMSNormGrad(dY[..., d], X[..., d], W[d], InvRMS[..., 1] [, Residual[..., d]]) -> dX[..., d], dW[d]
//       dX plus Residual when given: the gradient reaching the norm's input by
//       the residual connection, added in the same pass (Sum(Residual, dX)'s bits).
//   AbsColSum(Y[..., d] [, Mask[...] int64]) -> S[d]
//       S_j = sum over every leading position t of Mask_t * |Y_tj| (Mask 1 when absent):
//       MIGU's magnitude tap in one pass.
//   SwiGLU(G, U) -> Y = G * sigmoid(G) * U
//   SwiGLUGrad(dY, G, U) -> dG, dU
//   Gelu(X [, U]; approximate "none" | "tanh") -> Y = gelu(X) [* U]
//   GeluGrad(dY, X [, U]; approximate) -> dX [, dU]
//       U, of X's shape, gates the GELU (t5's "gated-gelu"): the Mul after it
//       in the same pass, its bits.
//   SwiGLUTaps(G[..., d], U[..., d]) -> Y, SG[d], SU[d]
//   GeluTaps(X[..., d] [, U[..., d]]; approximate) -> Y, SX[d] [, SU[d]]
//       SwiGLU's or Gelu's Y and the AbsColSum of each input, in one pass.
//   Softmax(X[..., d] [, Bias]) -> Y[..., d]
//       over the last axis, of X + Bias when given (Bias of X's rank, last axis d,
//       every other axis X's or 1: an attention mask or position bias), the Add's bits.
//   SoftmaxGrad(dY[..., d], Y[..., d]) -> dX[..., d]
//   LayerNorm(X[..., d], W[d], B[d]; epsilon) -> Y[..., d], Mean[..., 1], InvStd[..., 1]
//   LayerNormGrad(dY, X, W, Mean, InvStd [, Residual]) -> dX (+ Residual), dW[d], dB[d]
//   AddN(X0, X1 [, … X7]) -> Y = ((X0 + X1) + X2) + …: ONNX's Sum of same-shaped
//       inputs, its bits, in one pass.
//   ScatterAddRows(Table[outer, V, inner], Indices[N] int64, Updates[outer, N, inner] [, Base]; axis) -> Y
//       Y = Base (0 when absent) + the rows of Updates added at their indices along axis:
//       Gather's gradient (an embedding's), with its tied gradient added.
//   Attention(Q, K, V [, Bias]; alpha, permQ, permK, permV, permY) -> Y [, LSE]
//   AttentionGrad(dY, Q, K, V, Y, LSE [, Bias]; the same) -> dQ, dK, dV [, dZ]
//       scaled dot-product attention per head, its scores kept in cache (see
//       "Attention" below; its products use FMAs, so its bits are not the
//       standard ops', only their float32 rounding).
//
// The float operations are those of the standard-op formulation (x*x summed,
// divided by d, eps added, sqrt, reciprocal, x*r, times w), so both agree to
// float32 rounding. Sums run in sixteen fixed lanes and per-block partial sums
// are added in block order, so a result does not depend on the number of
// threads, and -ffp-contract=off keeps the vector clones (target_clones) from
// fusing multiply-adds: every CPU gives the same bits.
//
// Work is split over ONNX Runtime's intra-op threads with
// KernelContext_ParallelFor (ORT >= 1.17).

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <immintrin.h>

#include "onnxruntime_c_api.h"
#include "ort_op.h"

static const OrtApi *api;

static OrtStatus *fail(const char *op, const char *msg) {
	char buf[512];
	snprintf(buf, sizeof buf, "ai.migu.%s: %s", op, msg);
	return api->CreateStatus(ORT_INVALID_ARGUMENT, buf);
}

enum { MAX_RANK = 8 };

// tensor is one input or output as the kernels see it.
typedef struct {
	void *data;
	int64_t dims[MAX_RANK];
	size_t rank;
	int64_t count;
	ONNXTensorElementDataType type;
} tensor;

static OrtStatus *describe(const OrtValue *v, tensor *t, const char *op) {
	OrtTensorTypeAndShapeInfo *info = NULL;
	TRY(api->GetTensorTypeAndShape(v, &info));
	OrtStatus *s = api->GetDimensionsCount(info, &t->rank);
	if (s == NULL && t->rank > MAX_RANK) s = fail(op, "tensor rank above 8");
	if (s == NULL) s = api->GetDimensions(info, t->dims, t->rank);
	if (s == NULL) s = api->GetTensorElementType(info, &t->type);
	api->ReleaseTensorTypeAndShapeInfo(info);
	if (s != NULL) return s;
	t->count = 1;
	for (size_t i = 0; i < t->rank; i++) t->count *= t->dims[i];
	return api->GetTensorMutableData((OrtValue *)v, &t->data);
}

static OrtStatus *input(OrtKernelContext *ctx, size_t i, tensor *t, const char *op) {
	const OrtValue *v = NULL;
	TRY(api->KernelContext_GetInput(ctx, i, &v));
	if (v == NULL) return fail(op, "a required input is missing");
	return describe(v, t, op);
}

// optional reads input i when the node has it; t->data stays NULL otherwise.
static OrtStatus *optional(OrtKernelContext *ctx, size_t i, tensor *t, const char *op) {
	size_t n = 0;
	TRY(api->KernelContext_GetInputCount(ctx, &n));
	if (n <= i) return NULL;
	const OrtValue *v = NULL;
	TRY(api->KernelContext_GetInput(ctx, i, &v));
	return v == NULL ? NULL : describe(v, t, op);
}

static OrtStatus *output(OrtKernelContext *ctx, size_t i, const int64_t *dims, size_t rank, float **data) {
	OrtValue *v = NULL;
	TRY(api->KernelContext_GetOutput(ctx, i, dims, rank, &v));
	return api->GetTensorMutableData(v, (void **)data);
}

// rowsOf checks that x is [..., d] with d = w's length and returns the row count.
static OrtStatus *rowsOf(const tensor *x, const tensor *w, int64_t *rows, const char *op) {
	if (x->rank < 1 || w->rank != 1 || x->dims[x->rank - 1] != w->dims[0])
		return fail(op, "X must be [..., d] and W [d]");
	*rows = w->dims[0] == 0 ? 0 : x->count / w->dims[0];
	return NULL;
}

// Rows are taken in blocks of ROW_BLOCK; columns of the tap in blocks of COL_BLOCK.
enum { ROW_BLOCK = 16, COL_BLOCK = 64 };

// The row sums (RMSNorm, LayerNorm) run in WIDE = 16 fixed lanes, added
// pairwise at the end, written with GCC's vector extension so that each
// clone maps them onto its registers (one AVX-512 register, two AVX2, four
// SSE) without reassociating anything: every clone gives the same bits.
// (Loops over 8-lane arrays left GCC's AVX-512 clone keeping each lane's
// additions in order with scalar adds, at a fraction of the speed.)
enum { WIDE = 16 };
typedef float wide __attribute__((vector_size(WIDE * sizeof(float))));

// load_wide reads WIDE floats at any alignment (a macro: a function
// returning a 64-byte vector would change the ABI of the default clone).
#define load_wide(p) (__extension__({ wide v_; memcpy(&v_, (p), sizeof v_); v_; }))

static inline float wide_total(const wide *v) {
	float s[WIDE];
	memcpy(s, v, sizeof s);
	for (int n = WIDE / 2; n >= 1; n /= 2)
		for (int k = 0; k < n; k++) s[k] = s[2 * k] + s[2 * k + 1];
	return s[0];
}

VECTOR static float sum_squares(const float *x, int64_t d) {
	wide acc = {0};
	int64_t j = 0;
	for (; j + WIDE <= d; j += WIDE) {
		wide v = load_wide(x + j);
		acc += v * v;
	}
	float s = wide_total(&acc);
	for (; j < d; j++) s += x[j] * x[j];
	return s;
}

VECTOR static float dot_gx(const float *dy, const float *w, const float *x, int64_t d) {
	wide acc = {0};
	int64_t j = 0;
	for (; j + WIDE <= d; j += WIDE) acc += (load_wide(dy + j) * load_wide(w + j)) * load_wide(x + j);
	float s = wide_total(&acc);
	for (; j < d; j++) s += (dy[j] * w[j]) * x[j];
	return s;
}

VECTOR static void scale_row(const float *x, const float *w, float r, float *y, int64_t d) {
	for (int64_t j = 0; j < d; j++) y[j] = (x[j] * r) * w[j];
}

// grad_row writes dx = r*g - c*x with g = dy*w, and adds dy*x*r to dw.
VECTOR static void grad_row(const float *dy, const float *w, const float *x, float r, float c, float *dx, float *dw,
                            int64_t d) {
	for (int64_t j = 0; j < d; j++) {
		dx[j] = (dy[j] * w[j]) * r - x[j] * c;
		dw[j] += dy[j] * (x[j] * r);
	}
}

VECTOR static void add_row(float *acc, const float *v, int64_t d) {
	for (int64_t j = 0; j < d; j++) acc[j] += v[j];
}

VECTOR static void abs_add(float *acc, const float *y, int64_t n) {
	for (int64_t j = 0; j < n; j++) acc[j] += fabsf(y[j]);
}

VECTOR static void abs_add_scaled(float *acc, const float *y, float m, int64_t n) {
	for (int64_t j = 0; j < n; j++) acc[j] += m * fabsf(y[j]);
}

static size_t blocks(int64_t n, int64_t size) { return (size_t)((n + size - 1) / size); }

// lines allocates n floats starting on a 64-byte cache line (free() frees
// them). The activation kernels' partial rows of the taps use it: at
// malloc's 16-byte alignment most 64-byte vector loads and stores of them
// split two lines, and the taps inside SwiGLU took 10 % longer
// (AbsColSum, reading its input from further away, showed no difference).
static float *lines(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64); }

// ---- RMSNorm ----

typedef struct {
	float epsilon;
	int tanh;     // Gelu, GeluGrad: approximate "tanh" (else "none": erf)
	int64_t axis; // ScatterAddRows
	// Attention, AttentionGrad: alpha and permQ, permK, permV, permY.
	float alpha;
	int64_t perm[4][4];
} rms_kernel;

typedef struct {
	const float *x, *w;
	float *y, *inv;
	int64_t rows, d;
	float eps;
} rms_job;

static void rms_block(void *p, size_t b) {
	const rms_job *j = p;
	int64_t end = (int64_t)(b + 1) * ROW_BLOCK;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * ROW_BLOCK; r < end; r++) {
		const float *x = j->x + r * j->d;
		float ms = sum_squares(x, j->d) / (float)j->d;
		float inv = 1.0f / sqrtf(ms + j->eps);
		j->inv[r] = inv;
		scale_row(x, j->w, inv, j->y + r * j->d, j->d);
	}
}

static OrtStatus *rms_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "RMSNorm";
	tensor x, w;
	TRY(input(ctx, 0, &x, op));
	TRY(input(ctx, 1, &w, op));
	int64_t rows = 0;
	TRY(rowsOf(&x, &w, &rows, op));
	rms_job j = {.x = x.data, .w = w.data, .rows = rows, .d = w.dims[0], .eps = ((rms_kernel *)k)->epsilon};
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	int64_t idims[MAX_RANK];
	memcpy(idims, x.dims, sizeof idims);
	idims[x.rank - 1] = 1;
	TRY(output(ctx, 1, idims, x.rank, &j.inv));
	if (rows == 0) return NULL;
	return api->KernelContext_ParallelFor(ctx, rms_block, blocks(rows, ROW_BLOCK), 0, &j);
}

// ---- RMSNormGrad ----

typedef struct {
	const float *dy, *x, *w, *inv, *res; // res: the Residual added to dX, or NULL
	float *dx, *partial;                 // partial: one dW row per block
	int64_t rows, d;
} rmsgrad_job;

static void rmsgrad_block(void *p, size_t b) {
	const rmsgrad_job *j = p;
	int64_t d = j->d;
	float *dw = j->partial + (int64_t)b * d;
	memset(dw, 0, (size_t)d * sizeof *dw);
	int64_t end = (int64_t)(b + 1) * ROW_BLOCK;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * ROW_BLOCK; r < end; r++) {
		const float *dy = j->dy + r * d, *x = j->x + r * d;
		float inv = j->inv[r];
		float c = inv * inv * inv * (dot_gx(dy, j->w, x, d) / (float)d);
		grad_row(dy, j->w, x, inv, c, j->dx + r * d, dw, d);
		if (j->res != NULL) add_row(j->dx + r * d, j->res + r * d, d);
	}
}

typedef struct {
	const float *partial;
	float *dw;
	size_t nblocks;
	int64_t d;
} colsum_job;

// colsum_block adds the per-block dW rows, in block order, for one column block.
static void colsum_block(void *p, size_t b) {
	const colsum_job *j = p;
	int64_t c0 = (int64_t)b * COL_BLOCK, n = j->d - c0 < COL_BLOCK ? j->d - c0 : COL_BLOCK;
	float *out = j->dw + c0;
	memset(out, 0, (size_t)n * sizeof *out);
	for (size_t k = 0; k < j->nblocks; k++) add_row(out, j->partial + (int64_t)k * j->d + c0, n);
}

static OrtStatus *rmsgrad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "RMSNormGrad";
	tensor dy, x, w, inv, res = {0};
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &x, op));
	TRY(input(ctx, 2, &w, op));
	TRY(input(ctx, 3, &inv, op));
	TRY(optional(ctx, 4, &res, op));
	int64_t rows = 0;
	TRY(rowsOf(&x, &w, &rows, op));
	if (dy.count != x.count || inv.count != rows) return fail(op, "dY must have X's shape and InvRMS one value per row");
	if (res.data != NULL && res.count != x.count) return fail(op, "Residual must have X's shape");
	rmsgrad_job j = {.dy = dy.data, .x = x.data, .w = w.data, .inv = inv.data, .res = res.data, .rows = rows, .d = w.dims[0]};
	float *dw;
	TRY(output(ctx, 0, x.dims, x.rank, &j.dx));
	TRY(output(ctx, 1, w.dims, 1, &dw));
	if (j.d == 0) return NULL;
	if (rows == 0) {
		memset(dw, 0, (size_t)j.d * sizeof *dw);
		return NULL;
	}
	size_t nb = blocks(rows, ROW_BLOCK);
	j.partial = malloc(nb * (size_t)j.d * sizeof(float));
	if (j.partial == NULL) return api->CreateStatus(ORT_FAIL, "ai.migu.RMSNormGrad: out of memory");
	OrtStatus *s = api->KernelContext_ParallelFor(ctx, rmsgrad_block, nb, 0, &j);
	if (s == NULL) {
		colsum_job cj = {.partial = j.partial, .dw = dw, .nblocks = nb, .d = j.d};
		s = api->KernelContext_ParallelFor(ctx, colsum_block, blocks(j.d, COL_BLOCK), 0, &cj);
	}
	free(j.partial);
	return s;
}

// ---- AbsColSum ----
//
// Row-blocked: every block of TAP_ROWS(rows) consecutive rows sums its |Y|
// rows into a partial row of d floats, reading Y once, contiguously (the
// column-blocked form read every row in 64-float pieces, strided by the
// row, and was slower than the standard Abs and MatMul at d = 256 and at a
// vocabulary's width); colsum_block then adds the partial rows in block
// order. The block size depends on the row count only, so the sums do not
// depend on the number of threads.

// TAP_MIN_ROWS is the fewest rows in a block; TAP_MAX_BLOCKS bounds the
// partial rows (and so the memory and the reduction) for long inputs.
enum { TAP_MIN_ROWS = 16, TAP_MAX_BLOCKS = 64 };

static int64_t tap_rows(int64_t rows) {
	int64_t r = (rows + TAP_MAX_BLOCKS - 1) / TAP_MAX_BLOCKS;
	return r < TAP_MIN_ROWS ? TAP_MIN_ROWS : r;
}

typedef struct {
	const float *y;
	const int64_t *mask;
	float *partial; // one row of d per block
	int64_t rows, d, per;
} tap_job;

static void tap_block(void *p, size_t b) {
	const tap_job *j = p;
	int64_t d = j->d, r0 = (int64_t)b * j->per, end = r0 + j->per;
	if (end > j->rows) end = j->rows;
	float *acc = j->partial + (int64_t)b * d;
	memset(acc, 0, (size_t)d * sizeof *acc);
	for (int64_t r = r0; r < end; r++) {
		const float *y = j->y + r * d;
		if (j->mask == NULL)
			abs_add(acc, y, d);
		else if (j->mask[r] != 0)
			abs_add_scaled(acc, y, (float)j->mask[r], d);
	}
}

static OrtStatus *tap_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "AbsColSum";
	tensor y, mask = {0};
	size_t nin = 0;
	TRY(input(ctx, 0, &y, op));
	TRY(api->KernelContext_GetInputCount(ctx, &nin));
	if (nin > 1) {
		const OrtValue *v = NULL;
		TRY(api->KernelContext_GetInput(ctx, 1, &v));
		if (v != NULL) TRY(describe(v, &mask, op));
	}
	if (y.rank < 1) return fail(op, "Y must have rank 1 or more");
	tap_job j = {.y = y.data, .d = y.dims[y.rank - 1]};
	j.rows = j.d == 0 ? 0 : y.count / j.d;
	if (mask.data != NULL) {
		if (mask.count != j.rows) return fail(op, "Mask must have one value per row of Y");
		j.mask = mask.data;
	}
	float *out;
	TRY(output(ctx, 0, &j.d, 1, &out));
	if (j.d == 0) return NULL;
	if (j.rows == 0) {
		memset(out, 0, (size_t)j.d * sizeof *out);
		return NULL;
	}
	j.per = tap_rows(j.rows);
	size_t nb = blocks(j.rows, j.per);
	j.partial = malloc(nb * (size_t)j.d * sizeof(float));
	if (j.partial == NULL) return api->CreateStatus(ORT_FAIL, "ai.migu.AbsColSum: out of memory");
	OrtStatus *s = api->KernelContext_ParallelFor(ctx, tap_block, nb, 0, &j);
	if (s == NULL) {
		colsum_job cj = {.partial = j.partial, .dw = out, .nblocks = nb, .d = j.d};
		s = api->KernelContext_ParallelFor(ctx, colsum_block, blocks(j.d, COL_BLOCK), 0, &cj);
	}
	free(j.partial);
	return s;
}

// ---- cross-entropy and softmax (PickLogSoftmax, PickLogSoftmaxGrad, Softmax, SoftmaxGrad) ----
//
// The row loops work on 16 floats at a time in GCC's generic vectors (vf):
// one AVX-512 register, two AVX2 ones or four SSE ones, the same
// operations on every lane whatever the width, so row sums, added lane by
// lane and then across the 16 lanes in a fixed order, do not depend on the
// CPU or the thread count. Tails shorter than 16 run the same operations
// on scalars.
//
// exp, the file's only one (vexp on 16 lanes, xexp on one float, the same
// operations, so the same bits; the activations below use xexp too), is a
// Cephes-style polynomial: Cody-Waite reduction by ln 2, a degree-6
// polynomial, and a multiply by 2^n made in the exponent bits. Checked
// against double-precision exp on every float of [-86, 88] (2.24e9
// values): at most 0.990 ulp, mean 0.063 (the degree-7 Taylor polynomial
// the activations had before: 1.218 ulp, mean 0.064). Below -86 the
// results are subnormal or nearly so, and below about -87.7 (n = -127,
// whose 2^n bits are 0) it returns 0; so does -inf, and NaN stays NaN. Its
// arguments must not exceed XEXP_HI = 88 (e^88 is finite; above 88.7 the
// exponent bits overflow): the softmax and loss arguments are at most a
// rounding error above 0, tanh takes exp of -2|x|, and sigmoid clamps its
// argument (xexp_hi).

enum { XLANES = 16 };

// The vector helpers are static and always inlined, so no vector crosses a
// call: GCC's notes on the AVX-512 calling convention do not apply
// (scripts/kernels.sh builds with -Wno-psabi).
typedef float vf __attribute__((vector_size(XLANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(XLANES * sizeof(int32_t))));

#define XINLINE static inline __attribute__((always_inline))

XINLINE vf vload(const float *p) {
	vf v;
	memcpy(&v, p, sizeof v);
	return v;
}

XINLINE void vstore(float *p, const vf *v) { memcpy(p, v, sizeof *v); }

XINLINE vf vsplat(float x) { return (vf){0} + x; }

// vselect takes a where mask is set (all ones), b elsewhere.
XINLINE vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

// The exp constants: 1.5 * 2^23 rounds to an integer when added; ln 2 in
// two parts; the smallest argument it computes with (below, the same
// result, 0) and the largest it takes.
#define XEXP_LO -88.0f
#define XEXP_HI 88.0f
#define XEXP_LOG2E 1.44269504088896341f
#define XEXP_MAGIC 12582912.0f
#define XEXP_LN2HI 0.693359375f
#define XEXP_LN2LO -2.12194440e-4f
#define XEXP_POLY(p, r)                     \
	p = p * r + 1.3981999507e-3f;          \
	p = p * r + 8.3334519073e-3f;          \
	p = p * r + 4.1665795894e-2f;          \
	p = p * r + 1.6666665459e-1f;          \
	p = p * r + 5.0000001201e-1f

XINLINE vf vexp(vf x) {
	vf lo = vsplat(XEXP_LO);
	vf xc = vselect(x < lo, lo, x); // NaN is not below: the arithmetic carries it through
	vf t = xc * XEXP_LOG2E + XEXP_MAGIC;
	vf n = t - XEXP_MAGIC;
	vf scale = (vf)(((vi)t - (0x4B400000 - 127)) << 23); // 2^n; 0 for n = -127
	vf r = (xc - n * XEXP_LN2HI) - n * XEXP_LN2LO;
	vf p = vsplat(1.9875691500e-4f);
	XEXP_POLY(p, r);
	vf e = (p * (r * r) + r) + 1.0f;
	return e * scale;
}

// xexp is vexp on one float: the same operations, so the same bits. It is
// branch-free, so that loops calling it (the row tails, the activations)
// vectorise in the target_clones.
XINLINE float xexp(float x) {
	float xc = x < XEXP_LO ? XEXP_LO : x;
	float t = xc * XEXP_LOG2E + XEXP_MAGIC;
	float n = t - XEXP_MAGIC;
	uint32_t tb;
	memcpy(&tb, &t, sizeof tb);
	uint32_t sb = (tb - (0x4B400000u - 127u)) << 23;
	float scale;
	memcpy(&scale, &sb, sizeof scale);
	float r = (xc - n * XEXP_LN2HI) - n * XEXP_LN2LO;
	float p = 1.9875691500e-4f;
	XEXP_POLY(p, r);
	float e = (p * (r * r) + r) + 1.0f;
	return e * scale;
}

// vsum adds the 16 lanes pairwise in a fixed order.
XINLINE float vsum(const vf *v) {
	float a[XLANES];
	vstore(a, v);
	float s[8];
	for (int k = 0; k < 8; k++) s[k] = a[k] + a[k + 8];
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// row_max returns max_j x_j (a NaN is caught by the exp that follows), in
// four vectors of lanes, which changes nothing but the speed: the maximum
// does not depend on the order.
VECTOR static float row_max(const float *x, int64_t d) {
	vf acc[4] = {vsplat(-INFINITY), vsplat(-INFINITY), vsplat(-INFINITY), vsplat(-INFINITY)};
	int64_t j = 0;
	for (; j + 4 * XLANES <= d; j += 4 * XLANES)
		for (int k = 0; k < 4; k++) {
			vf v = vload(x + j + k * XLANES);
			acc[k] = vselect(v > acc[k], v, acc[k]);
		}
	for (; j + XLANES <= d; j += XLANES) {
		vf v = vload(x + j);
		acc[0] = vselect(v > acc[0], v, acc[0]);
	}
	// The four vectors, then the lanes, halved in a tree: at attention's
	// 128 keys a row's 64 lanes in one chain of compares took as long as
	// its exps.
	for (int k = 1; k < 4; k++) acc[0] = vselect(acc[k] > acc[0], acc[k], acc[0]);
	float a[XLANES];
	vstore(a, &acc[0]);
	for (int n = XLANES / 2; n >= 1; n /= 2)
		for (int k = 0; k < n; k++) a[k] = a[k + n] > a[k] ? a[k + n] : a[k];
	float m = a[0];
	for (; j < d; j++) m = x[j] > m ? x[j] : m;
	return m;
}

// sum_exp returns Σ_j exp(x_j - m), storing the terms in e unless e is NULL.
VECTOR static float sum_exp(const float *x, float m, float *e, int64_t d) {
	vf acc = vsplat(0.0f);
	int64_t j = 0;
	for (; j + XLANES <= d; j += XLANES) {
		vf v = vexp(vload(x + j) - m);
		if (e != NULL) vstore(e + j, &v);
		acc += v;
	}
	float s = vsum(&acc);
	for (; j < d; j++) {
		float v = xexp(x[j] - m);
		if (e != NULL) e[j] = v;
		s += v;
	}
	return s;
}

// neg_softmax_scaled writes dx_j = -(exp(x_j - lse) * g).
VECTOR static void neg_softmax_scaled(const float *x, float lse, float g, float *dx, int64_t d) {
	int64_t j = 0;
	for (; j + XLANES <= d; j += XLANES) {
		vf v = -(vexp(vload(x + j) - lse) * g);
		vstore(dx + j, &v);
	}
	for (; j < d; j++) dx[j] = -(xexp(x[j] - lse) * g);
}

VECTOR static void scale_in_place(float *y, float s, int64_t d) {
	for (int64_t j = 0; j < d; j++) y[j] *= s;
}

VECTOR static float dot_row(const float *a, const float *b, int64_t d) {
	vf acc = vsplat(0.0f);
	int64_t j = 0;
	for (; j + XLANES <= d; j += XLANES) acc += vload(a + j) * vload(b + j);
	float s = vsum(&acc);
	for (; j < d; j++) s += a[j] * b[j];
	return s;
}

// softmax_grad_row writes dx = y * (dy - dot).
VECTOR static void softmax_grad_row(const float *dy, const float *y, float dot, float *dx, int64_t d) {
	for (int64_t j = 0; j < d; j++) dx[j] = y[j] * (dy[j] - dot);
}

// rows_per_block gives row blocks of at least ROW_BLOCK rows and about 16K
// values, so that short rows (attention over a few keys) are not split
// into more blocks than the thread pool can use.
static int64_t rows_per_block(int64_t d) {
	int64_t r = d > 0 ? 16384 / d : ROW_BLOCK;
	return r < ROW_BLOCK ? ROW_BLOCK : r;
}

// last_axis describes x as rows of its last axis.
static OrtStatus *last_axis(const tensor *x, int64_t *rows, int64_t *d, const char *op) {
	if (x->rank < 1) return fail(op, "the input must have rank 1 or more");
	*d = x->dims[x->rank - 1];
	*rows = *d == 0 ? 0 : x->count / *d;
	return NULL;
}

// ---- PickLogSoftmax ----
//
// PickLogSoftmax(Logits[..., V], Index[..., 1] int64) -> Picked[..., 1], LSE[..., 1]
//     LSE = log Σ_j exp(Logits_j) (max-shifted), Picked = (Logits_Index - max) - log Σ exp(Logits - max):
//     LogSoftmax(axis -1) then GatherElements at Index, without the [..., V] log-probabilities.
//     Index may be negative (counted from V, as GatherElements allows).

typedef struct {
	const float *x;
	const int64_t *idx;
	float *picked, *lse;
	int64_t rows, v, per;
} pick_job;

static void pick_block(void *p, size_t b) {
	const pick_job *j = p;
	int64_t end = (int64_t)(b + 1) * j->per;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * j->per; r < end; r++) {
		const float *x = j->x + r * j->v;
		float m = row_max(x, j->v);
		float ls = logf(sum_exp(x, m, NULL, j->v));
		int64_t i = j->idx[r] < 0 ? j->idx[r] + j->v : j->idx[r];
		j->picked[r] = (x[i] - m) - ls;
		j->lse[r] = m + ls;
	}
}

// pick_index checks Index against Logits: one index per row, each in [-V, V).
static OrtStatus *pick_index(const tensor *x, const tensor *idx, int64_t rows, int64_t v, const char *op) {
	if (x->rank < 1 || idx->rank != x->rank || idx->dims[idx->rank - 1] != 1 || idx->count != rows)
		return fail(op, "Index must be Logits' shape with a last axis of 1");
	const int64_t *ix = idx->data;
	for (int64_t r = 0; r < rows; r++)
		if (ix[r] < -v || ix[r] >= v) {
			char msg[160];
			snprintf(msg, sizeof msg, "index %lld of row %lld is outside [-%lld, %lld)", (long long)ix[r], (long long)r,
			         (long long)v, (long long)v);
			return fail(op, msg);
		}
	return NULL;
}

static OrtStatus *pick_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "PickLogSoftmax";
	tensor x, idx;
	TRY(input(ctx, 0, &x, op));
	TRY(input(ctx, 1, &idx, op));
	pick_job j = {.x = x.data, .idx = idx.data};
	TRY(last_axis(&x, &j.rows, &j.v, op));
	if (j.v == 0) return fail(op, "Logits' last axis is empty");
	TRY(pick_index(&x, &idx, j.rows, j.v, op));
	TRY(output(ctx, 0, idx.dims, idx.rank, &j.picked));
	TRY(output(ctx, 1, idx.dims, idx.rank, &j.lse));
	if (j.rows == 0) return NULL;
	j.per = rows_per_block(j.v);
	return api->KernelContext_ParallelFor(ctx, pick_block, blocks(j.rows, j.per), 0, &j);
}

// ---- PickLogSoftmaxGrad ----
//
// PickLogSoftmaxGrad(dPicked[..., 1], Logits[..., V], Index[..., 1] int64, LSE[..., 1]) -> dLogits[..., V]
//     dLogits = dPicked * (onehot(Index) - softmax(Logits)), softmax recomputed as exp(Logits - LSE),
//     in the standard rule's operations: -(p * g) off the index, g - p * g at it.

typedef struct {
	const float *dp, *x, *lse;
	const int64_t *idx;
	float *dx;
	int64_t rows, v, per;
} pickgrad_job;

static void pickgrad_block(void *p, size_t b) {
	const pickgrad_job *j = p;
	int64_t end = (int64_t)(b + 1) * j->per;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * j->per; r < end; r++) {
		const float *x = j->x + r * j->v;
		float *dx = j->dx + r * j->v, g = j->dp[r];
		if (g == 0.0f) { // an ignored label: no gradient
			memset(dx, 0, (size_t)j->v * sizeof *dx);
			continue;
		}
		neg_softmax_scaled(x, j->lse[r], g, dx, j->v);
		int64_t i = j->idx[r] < 0 ? j->idx[r] + j->v : j->idx[r];
		dx[i] = g + dx[i];
	}
}

static OrtStatus *pickgrad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "PickLogSoftmaxGrad";
	tensor dp, x, idx, lse;
	TRY(input(ctx, 0, &dp, op));
	TRY(input(ctx, 1, &x, op));
	TRY(input(ctx, 2, &idx, op));
	TRY(input(ctx, 3, &lse, op));
	pickgrad_job j = {.dp = dp.data, .x = x.data, .lse = lse.data, .idx = idx.data};
	TRY(last_axis(&x, &j.rows, &j.v, op));
	if (j.v == 0) return fail(op, "Logits' last axis is empty");
	TRY(pick_index(&x, &idx, j.rows, j.v, op));
	if (dp.count != j.rows || lse.count != j.rows) return fail(op, "dPicked and LSE must have one value per row of Logits");
	TRY(output(ctx, 0, x.dims, x.rank, &j.dx));
	if (j.rows == 0) return NULL;
	j.per = rows_per_block(j.v);
	return api->KernelContext_ParallelFor(ctx, pickgrad_block, blocks(j.rows, j.per), 0, &j);
}

// ---- Softmax ----
//
// Softmax(X[..., d] [, Bias]) -> Y[..., d], over the last axis: with Z = X
// (+ Bias, broadcast), Y = exp(Z - max) * (1 / Σ exp(Z - max)). Z is written
// into Y's row first and the softmax taken there in place: the float32 sum
// an Add before the softmax would make (kernels.FuseSoftmaxBias), without
// a pass over a tensor of attention scores.

typedef struct {
	const float *x, *dy, *y, *bias;
	float *out;
	int64_t rows, d, per;
	// The bias's element strides of X's leading axes (0 where it
	// broadcasts) and those axes' sizes, the last leading axis first.
	int64_t lead, bdims[MAX_RANK], bstride[MAX_RANK];
} softmax_job;

// bias_row returns the bias row that row r of X adds.
static const float *bias_row(const softmax_job *j, int64_t r) {
	int64_t off = 0;
	for (int64_t a = 0; a < j->lead && r > 0; a++) {
		off += (r % j->bdims[a]) * j->bstride[a];
		r /= j->bdims[a];
	}
	return j->bias + off;
}

VECTOR static void sum_rows(const float *x, const float *b, float *y, int64_t d) {
	for (int64_t i = 0; i < d; i++) y[i] = x[i] + b[i];
}

static void softmax_block(void *p, size_t b) {
	const softmax_job *j = p;
	int64_t end = (int64_t)(b + 1) * j->per;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * j->per; r < end; r++) {
		const float *x = j->x + r * j->d;
		float *y = j->out + r * j->d;
		if (j->bias != NULL) {
			sum_rows(x, bias_row(j, r), y, j->d);
			x = y;
		}
		float s = sum_exp(x, row_max(x, j->d), y, j->d);
		scale_in_place(y, 1.0f / s, j->d);
	}
}

static OrtStatus *softmax_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "Softmax";
	tensor x, bias = {0};
	TRY(input(ctx, 0, &x, op));
	TRY(optional(ctx, 1, &bias, op));
	softmax_job j = {.x = x.data, .bias = bias.data};
	TRY(last_axis(&x, &j.rows, &j.d, op));
	if (bias.data != NULL) {
		if (bias.rank != x.rank) return fail(op, "Bias must have X's rank");
		int64_t stride = bias.dims[bias.rank - 1];
		if (stride != j.d) return fail(op, "Bias's last axis must be X's");
		j.lead = (int64_t)x.rank - 1;
		for (int64_t a = 0; a < j.lead; a++) {
			size_t axis = (size_t)(j.lead - 1 - a);
			if (bias.dims[axis] != x.dims[axis] && bias.dims[axis] != 1)
				return fail(op, "every axis of Bias must be X's or 1");
			j.bdims[a] = x.dims[axis];
			j.bstride[a] = bias.dims[axis] == 1 ? 0 : stride;
			stride *= bias.dims[axis];
		}
	}
	TRY(output(ctx, 0, x.dims, x.rank, &j.out));
	if (j.rows == 0) return NULL;
	j.per = rows_per_block(j.d);
	return api->KernelContext_ParallelFor(ctx, softmax_block, blocks(j.rows, j.per), 0, &j);
}

// ---- SoftmaxGrad ----
//
// SoftmaxGrad(dY[..., d], Y[..., d]) -> dX[..., d]: dX = Y * (dY - Σ dY * Y) over the last axis.

static void softmaxgrad_block(void *p, size_t b) {
	const softmax_job *j = p;
	int64_t end = (int64_t)(b + 1) * j->per;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * j->per; r < end; r++) {
		const float *dy = j->dy + r * j->d, *y = j->y + r * j->d;
		softmax_grad_row(dy, y, dot_row(dy, y, j->d), j->out + r * j->d, j->d);
	}
}

static OrtStatus *softmaxgrad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "SoftmaxGrad";
	tensor dy, y;
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &y, op));
	softmax_job j = {.dy = dy.data, .y = y.data};
	TRY(last_axis(&y, &j.rows, &j.d, op));
	if (dy.rank != y.rank || memcmp(dy.dims, y.dims, y.rank * sizeof y.dims[0]) != 0) return fail(op, "dY must have Y's shape");
	TRY(output(ctx, 0, y.dims, y.rank, &j.out));
	if (j.rows == 0) return NULL;
	j.per = rows_per_block(j.d);
	return api->KernelContext_ParallelFor(ctx, softmaxgrad_block, blocks(j.rows, j.per), 0, &j);
}

// ---- Rotary, RotaryGrad ----
//
// Rotary(X[..., m, d], Cos[..., 1, d/2], Sin[..., 1, d/2]) -> Y[..., m, d]
//     rotary position embedding in the rotate-half layout (llama's), with
//     halves x1, x2 of each row: Y = [x1*cos - x2*sin, x2*cos + x1*sin], Cos
//     and Sin shared by the m rows (heads) of a position.
// RotaryGrad(dY[..., m, d], Cos, Sin) -> dX: the rotation back,
//     dX = [dy1*cos + dy2*sin, dy2*cos - dy1*sin].

typedef struct {
	const float *x, *cos, *sin;
	float *y;
	int64_t rows, m, half, per;
	int back;
} rotary_job;

VECTOR static void rotate_row(const float *x, const float *c, const float *s, float *y, int64_t half) {
	const float *x2 = x + half;
	float *y2 = y + half;
	for (int64_t j = 0; j < half; j++) {
		y[j] = x[j] * c[j] - x2[j] * s[j];
		y2[j] = x2[j] * c[j] + x[j] * s[j];
	}
}

VECTOR static void unrotate_row(const float *dy, const float *c, const float *s, float *dx, int64_t half) {
	const float *dy2 = dy + half;
	float *dx2 = dx + half;
	for (int64_t j = 0; j < half; j++) {
		dx[j] = dy[j] * c[j] + dy2[j] * s[j];
		dx2[j] = dy2[j] * c[j] - dy[j] * s[j];
	}
}

static void rotary_block(void *p, size_t b) {
	const rotary_job *j = p;
	int64_t end = (int64_t)(b + 1) * j->per, d = 2 * j->half;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)b * j->per; r < end; r++) {
		const float *c = j->cos + (r / j->m) * j->half, *s = j->sin + (r / j->m) * j->half;
		if (j->back)
			unrotate_row(j->x + r * d, c, s, j->y + r * d, j->half);
		else
			rotate_row(j->x + r * d, c, s, j->y + r * d, j->half);
	}
}

static OrtStatus *rotary_run(OrtKernelContext *ctx, int back, const char *op) {
	tensor x, c, s;
	TRY(input(ctx, 0, &x, op));
	TRY(input(ctx, 1, &c, op));
	TRY(input(ctx, 2, &s, op));
	if (x.rank < 2 || x.dims[x.rank - 1] % 2 != 0) return fail(op, "X must be [..., m, d] with an even d");
	rotary_job j = {.x = x.data, .cos = c.data, .sin = s.data, .m = x.dims[x.rank - 2], .half = x.dims[x.rank - 1] / 2, .back = back};
	int ok = c.rank == x.rank && s.rank == x.rank && c.dims[c.rank - 1] == j.half && c.dims[c.rank - 2] == 1;
	for (size_t i = 0; ok && i < x.rank; i++) ok = s.dims[i] == c.dims[i] && (i + 2 >= x.rank || c.dims[i] == x.dims[i]);
	if (!ok) return fail(op, "Cos and Sin must be X's shape with m = 1 and d/2 for d");
	j.rows = j.half == 0 ? 0 : x.count / (2 * j.half);
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	if (j.rows == 0 || j.m == 0) return NULL;
	j.per = rows_per_block(2 * j.half);
	return api->KernelContext_ParallelFor(ctx, rotary_block, blocks(j.rows, j.per), 0, &j);
}

static OrtStatus *rotary_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	return rotary_run(ctx, 0, "Rotary");
}

static OrtStatus *rotarygrad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	return rotary_run(ctx, 1, "RotaryGrad");
}

// ---- Activations: SwiGLU, Gelu ----
//
// SwiGLU(G, U) -> Y = G * sigmoid(G) * U (llama's MLP gate) and
// SwiGLUGrad(dY, G, U) -> dG, dU recompute the sigmoid in the backward
// instead of saving it. Gelu(X; approximate) -> Y is 0.5 X (1 + erf(X/sqrt 2))
// ("none") or 0.5 X (1 + tanh(sqrt(2/pi) (X + 0.044715 X^3))) ("tanh");
// GeluGrad(dY, X; approximate) -> dX. All are elementwise, taken in blocks of
// ELEM_BLOCK values over ORT's threads. sigmoid, tanh and erf are
// written here, branch-free, so that the target_clones vectorise them:
// sigmoid and tanh from xexp (the loss section's exp), erf's normal CDF
// from xexp and a least-squares fit made for this file (act_phi).
// The libm calls they replace would keep the loops scalar.

enum { ELEM_BLOCK = 8192 };

// xexp_hi is xexp of an argument that may exceed XEXP_HI: clamped there,
// e^88 is finite, so the sigmoid of a large negative argument comes out as
// 0 without inf arithmetic.
static inline float xexp_hi(float x) { return xexp(x > XEXP_HI ? XEXP_HI : x); }

static inline float act_sigmoid(float x) { return 1.0f / (1.0f + xexp_hi(-x)); }

// act_tanh takes exp of -2|x| <= 0, which needs no clamp, and puts x's
// sign back: with the clamp of 1 - 2/(1 + e^{2x}), GCC split the vector
// loop into paths for the clamped lanes, and GeluTanh ran 17-23 % slower.
static inline float act_tanh(float x) {
	float e = xexp(-2.0f * fabsf(x));
	return copysignf((1.0f - e) / (1.0f + e), x);
}

#define GELU_K 0.797884561f  // sqrt(2/pi)
#define GELU_C 0.044715f
#define GELU_R 0.707106781f  // 1/sqrt(2)
#define GELU_D 0.398942280f  // 1/sqrt(2 pi)

// act_phi returns the standard normal CDF the erf GELU multiplies x by,
// Phi(x) = (1 + erf(x/sqrt 2))/2, and in *e the e^(-x^2/2) its derivative
// needs. With z = |x|/sqrt 2, erfc(z) = e^(-z^2) P(1/(1 + 0.47047 z)), P
// a degree-6 weighted least-squares fit made for this file (absolute error
// 1.7e-8 on [0, 6]; 2.9e-7 in float32 arithmetic, at z near 0); Phi is
// erfc(z)/2 for x < 0, taken as it is rather than as 1 - erf, and
// 1 - erfc(z)/2 for x >= 0. One exp serves the value and the derivative;
// z is clamped at 6, where erfc is 2e-17.
static inline float act_phi(float x, float *e) {
	float z = fabsf(x) * GELU_R;
	z = z > 6.0f ? 6.0f : z;
	float t = 1.0f / (1.0f + 0.47047f * z);
	float q = 0.0648782551f;
	q = q * t + -0.524453521f;
	q = q * t + 1.32594633f;
	q = q * t + -0.772382796f;
	q = q * t + 0.752169907f;
	q = q * t + 0.140425637f;
	q = q * t + 0.0134161618f;
	*e = xexp(-(z * z));
	float h = 0.5f * (*e * q);
	return x < 0.0f ? h : 1.0f - h;
}

// SwiGLU and the tanh GELU do the standard-op formulation's operations in
// its order (exporters.Builder.SiLU, GELUTanh); the erf GELU is x Phi(x).
VECTOR static void swiglu_row(const float *g, const float *u, float *y, int64_t n) {
	for (int64_t i = 0; i < n; i++) y[i] = (g[i] * act_sigmoid(g[i])) * u[i];
}

// swiglu_grad_row: with s = sigmoid(g), dU = dY g s and
// dG = dY u (s + g s (1 - s)).
VECTOR static void swiglu_grad_row(const float *dy, const float *g, const float *u, float *dg, float *du, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		float s = act_sigmoid(g[i]), dgs = dy[i] * u[i];
		du[i] = dy[i] * (g[i] * s);
		dg[i] = dgs * s + (dgs * g[i]) * (s * (1.0f - s));
	}
}

// gelu_erf and gelu_tanh return GELU(x) and in *slope its derivative,
// from one exp: the erf form is x Phi(x), with slope
// Phi(x) + x e^(-x^2/2) / sqrt(2 pi); the tanh form does the standard-op
// formulation's operations in its order, with slope
// 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2).
static inline float gelu_erf(float x, float *slope) {
	float e, phi = act_phi(x, &e);
	*slope = phi + x * (e * GELU_D);
	return x * phi;
}

static inline float gelu_tanh(float v, float *slope) {
	float v2 = v * v, t = act_tanh((v + (v2 * v) * GELU_C) * GELU_K);
	*slope = 0.5f * (1.0f + t) + (0.5f * v) * ((1.0f - t * t) * (GELU_K * (1.0f + (3.0f * GELU_C) * v2)));
	return (v * (t + 1.0f)) * 0.5f;
}

// GELU_ROWS defines the four GELU loops of one approximation (ACT is
// gelu_erf or gelu_tanh), whose slope the forward loops leave for the
// compiler to drop: NAME_row, Y = GELU(X); NAME_gate_row, Y = GELU(X) U,
// the Mul of the gated form after it; NAME_grad_row, dX = dY slope; and
// NAME_gate_grad_row, dX = (dY U) slope and dU = dY GELU(X), as the Mul's
// and GELU's gradients compute them.
#define GELU_ROWS(NAME, ACT)                                                                                     \
	VECTOR static void NAME##_row(const float *x, float *y, int64_t n) {                                        \
		for (int64_t i = 0; i < n; i++) {                                                                       \
			float d;                                                                                            \
			y[i] = ACT(x[i], &d);                                                                               \
		}                                                                                                       \
	}                                                                                                           \
	VECTOR static void NAME##_gate_row(const float *x, const float *u, float *y, int64_t n) {                   \
		for (int64_t i = 0; i < n; i++) {                                                                       \
			float d;                                                                                            \
			y[i] = ACT(x[i], &d) * u[i];                                                                        \
		}                                                                                                       \
	}                                                                                                           \
	VECTOR static void NAME##_grad_row(const float *dy, const float *x, float *dx, int64_t n) {                 \
		for (int64_t i = 0; i < n; i++) {                                                                       \
			float d;                                                                                            \
			(void)ACT(x[i], &d);                                                                                \
			dx[i] = dy[i] * d;                                                                                  \
		}                                                                                                       \
	}                                                                                                           \
	VECTOR static void NAME##_gate_grad_row(const float *dy, const float *x, const float *u, float *dx, float *du, \
	                                        int64_t n) {                                                        \
		for (int64_t i = 0; i < n; i++) {                                                                       \
			float d, g = ACT(x[i], &d);                                                                         \
			du[i] = dy[i] * g;                                                                                  \
			dx[i] = (dy[i] * u[i]) * d;                                                                         \
		}                                                                                                       \
	}
GELU_ROWS(gelu, gelu_erf)
GELU_ROWS(gelu_tanh, gelu_tanh)
#undef GELU_ROWS

typedef struct {
	const float *a, *b, *c; // inputs: (G, U), (dY, G, U), (X [, U]) or (dY, X [, U])
	float *y, *z;           // outputs
	int64_t n;
	int tanh;
} act_job;

static int64_t act_span(const act_job *j, size_t b, int64_t *len) {
	int64_t i0 = (int64_t)b * ELEM_BLOCK;
	*len = j->n - i0 < ELEM_BLOCK ? j->n - i0 : ELEM_BLOCK;
	return i0;
}

static void swiglu_block(void *p, size_t b) {
	const act_job *j = p;
	int64_t n, i = act_span(j, b, &n);
	swiglu_row(j->a + i, j->b + i, j->y + i, n);
}

static void swiglu_grad_block(void *p, size_t b) {
	const act_job *j = p;
	int64_t n, i = act_span(j, b, &n);
	swiglu_grad_row(j->a + i, j->b + i, j->c + i, j->y + i, j->z + i, n);
}

static void gelu_block(void *p, size_t b) {
	const act_job *j = p;
	int64_t n, i = act_span(j, b, &n);
	if (j->b != NULL)
		(j->tanh ? gelu_tanh_gate_row : gelu_gate_row)(j->a + i, j->b + i, j->y + i, n);
	else
		(j->tanh ? gelu_tanh_row : gelu_row)(j->a + i, j->y + i, n);
}

static void gelu_grad_block(void *p, size_t b) {
	const act_job *j = p;
	int64_t n, i = act_span(j, b, &n);
	if (j->c != NULL)
		(j->tanh ? gelu_tanh_gate_grad_row : gelu_gate_grad_row)(j->a + i, j->b + i, j->c + i, j->y + i, j->z + i, n);
	else
		(j->tanh ? gelu_tanh_grad_row : gelu_grad_row)(j->a + i, j->b + i, j->y + i, n);
}

static OrtStatus *act_run(OrtKernelContext *ctx, void (*block)(void *, size_t), act_job *j) {
	if (j->n == 0) return NULL;
	return api->KernelContext_ParallelFor(ctx, block, blocks(j->n, ELEM_BLOCK), 0, j);
}

static int same_shape(const tensor *a, const tensor *b) {
	if (a->rank != b->rank) return 0;
	for (size_t i = 0; i < a->rank; i++)
		if (a->dims[i] != b->dims[i]) return 0;
	return 1;
}

static OrtStatus *swiglu_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "SwiGLU";
	tensor g, u;
	TRY(input(ctx, 0, &g, op));
	TRY(input(ctx, 1, &u, op));
	if (!same_shape(&g, &u)) return fail(op, "G and U must have the same shape");
	act_job j = {.a = g.data, .b = u.data, .n = g.count};
	TRY(output(ctx, 0, g.dims, g.rank, &j.y));
	return act_run(ctx, swiglu_block, &j);
}

static OrtStatus *swiglu_grad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "SwiGLUGrad";
	tensor dy, g, u;
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &g, op));
	TRY(input(ctx, 2, &u, op));
	if (!same_shape(&g, &u) || !same_shape(&dy, &g)) return fail(op, "dY, G and U must have the same shape");
	act_job j = {.a = dy.data, .b = g.data, .c = u.data, .n = g.count};
	TRY(output(ctx, 0, g.dims, g.rank, &j.y));
	TRY(output(ctx, 1, g.dims, g.rank, &j.z));
	return act_run(ctx, swiglu_grad_block, &j);
}

static OrtStatus *gelu_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "Gelu";
	tensor x, u = {0};
	TRY(input(ctx, 0, &x, op));
	TRY(optional(ctx, 1, &u, op));
	if (u.data != NULL && !same_shape(&x, &u)) return fail(op, "U must have X's shape");
	act_job j = {.a = x.data, .b = u.data, .n = x.count, .tanh = ((rms_kernel *)k)->tanh};
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	return act_run(ctx, gelu_block, &j);
}

static OrtStatus *gelu_grad_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "GeluGrad";
	tensor dy, x, u = {0};
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &x, op));
	TRY(optional(ctx, 2, &u, op));
	if (!same_shape(&dy, &x)) return fail(op, "dY must have X's shape");
	if (u.data != NULL && !same_shape(&x, &u)) return fail(op, "U must have X's shape");
	size_t outs = 0;
	TRY(api->KernelContext_GetOutputCount(ctx, &outs));
	if ((outs > 1) != (u.data != NULL)) return fail(op, "dU is the second output, given U and only then");
	act_job j = {.a = dy.data, .b = x.data, .c = u.data, .n = x.count, .tanh = ((rms_kernel *)k)->tanh};
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	if (u.data != NULL) TRY(output(ctx, 1, x.dims, x.rank, &j.z));
	return act_run(ctx, gelu_grad_block, &j);
}

// ---- SwiGLUTaps, GeluTaps: an activation and MIGU's taps of its inputs ----
//
// SwiGLUTaps(G, U) -> Y, SG[d], SU[d] and GeluTaps(X [, U]; approximate)
// -> Y, SX[d] [, SU[d]] write SwiGLU's or Gelu's Y and, while reading the
// inputs for it, the column sums of |G|, |U| or |X| that AbsColSum would
// compute from the same tensors in a second pass (llama taps gate_proj and
// up_proj, roberta the first feed-forward linear, t5 its wi_0 and wi_1). Rows go in AbsColSum's blocks
// (tap_rows) with its additions in its order, so Y has the activation's
// bits and each sum AbsColSum's, whatever the thread count.

VECTOR static void swiglu_taps_row(const float *g, const float *u, float *y, float *sg, float *su, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		y[i] = (g[i] * act_sigmoid(g[i])) * u[i];
		sg[i] += fabsf(g[i]);
		su[i] += fabsf(u[i]);
	}
}

// GELU_TAPS defines the GeluTaps loops of one approximation: NAME_taps_row
// and, gated by U, NAME_gate_taps_row.
#define GELU_TAPS(NAME, ACT)                                                                                      \
	VECTOR static void NAME##_taps_row(const float *x, float *y, float *sx, int64_t n) {                          \
		for (int64_t i = 0; i < n; i++) {                                                                        \
			float d;                                                                                             \
			y[i] = ACT(x[i], &d);                                                                                \
			sx[i] += fabsf(x[i]);                                                                                \
		}                                                                                                        \
	}                                                                                                            \
	VECTOR static void NAME##_gate_taps_row(const float *x, const float *u, float *y, float *sx, float *su,      \
	                                        int64_t n) {                                                         \
		for (int64_t i = 0; i < n; i++) {                                                                        \
			float d;                                                                                             \
			y[i] = ACT(x[i], &d) * u[i];                                                                         \
			sx[i] += fabsf(x[i]);                                                                                \
			su[i] += fabsf(u[i]);                                                                                \
		}                                                                                                        \
	}
GELU_TAPS(gelu, gelu_erf)
GELU_TAPS(gelu_tanh, gelu_tanh)
#undef GELU_TAPS

typedef struct {
	const float *a, *b; // (G, U), (X) or (X, U)
	float *y;
	float *partial; // per tapped input, one row of d per block
	int64_t rows, d, per, nblocks;
	int taps; // tapped inputs: 2 (SwiGLUTaps, gated GeluTaps) or 1
	int gelu; // GeluTaps (else SwiGLUTaps)
	int tanh;
} acttap_job;

static void acttap_block(void *p, size_t b) {
	const acttap_job *j = p;
	int64_t d = j->d, r0 = (int64_t)b * j->per, end = r0 + j->per;
	if (end > j->rows) end = j->rows;
	float *sa = j->partial + (int64_t)b * d, *sb = sa + j->nblocks * d;
	memset(sa, 0, (size_t)d * sizeof *sa);
	if (j->taps == 2) memset(sb, 0, (size_t)d * sizeof *sb);
	for (int64_t r = r0; r < end; r++) {
		int64_t o = r * d;
		if (!j->gelu)
			swiglu_taps_row(j->a + o, j->b + o, j->y + o, sa, sb, d);
		else if (j->taps == 2)
			(j->tanh ? gelu_tanh_gate_taps_row : gelu_gate_taps_row)(j->a + o, j->b + o, j->y + o, sa, sb, d);
		else
			(j->tanh ? gelu_tanh_taps_row : gelu_taps_row)(j->a + o, j->y + o, sa, d);
	}
}

// acttap_run runs the row blocks, then adds the partial rows of each tapped
// input into its output sums[k] in block order.
static OrtStatus *acttap_run(OrtKernelContext *ctx, acttap_job *j, float **sums) {
	if (j->d == 0) return NULL;
	if (j->rows == 0) {
		for (int k = 0; k < j->taps; k++) memset(sums[k], 0, (size_t)j->d * sizeof(float));
		return NULL;
	}
	j->per = tap_rows(j->rows);
	size_t nb = blocks(j->rows, j->per);
	j->nblocks = (int64_t)nb;
	j->partial = lines(nb * (size_t)(j->taps * j->d));
	if (j->partial == NULL)
		return api->CreateStatus(ORT_FAIL, j->gelu ? "ai.migu.GeluTaps: out of memory" : "ai.migu.SwiGLUTaps: out of memory");
	OrtStatus *s = api->KernelContext_ParallelFor(ctx, acttap_block, nb, 0, j);
	for (int k = 0; s == NULL && k < j->taps; k++) {
		colsum_job cj = {.partial = j->partial + (int64_t)k * j->nblocks * j->d, .dw = sums[k], .nblocks = nb, .d = j->d};
		s = api->KernelContext_ParallelFor(ctx, colsum_block, blocks(j->d, COL_BLOCK), 0, &cj);
	}
	free(j->partial);
	return s;
}

static OrtStatus *swiglu_taps_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "SwiGLUTaps";
	tensor g, u;
	TRY(input(ctx, 0, &g, op));
	TRY(input(ctx, 1, &u, op));
	if (!same_shape(&g, &u) || g.rank < 1) return fail(op, "G and U must have the same shape, of rank 1 or more");
	acttap_job j = {.a = g.data, .b = u.data, .d = g.dims[g.rank - 1], .taps = 2};
	j.rows = j.d == 0 ? 0 : g.count / j.d;
	float *sums[2];
	TRY(output(ctx, 0, g.dims, g.rank, &j.y));
	TRY(output(ctx, 1, &j.d, 1, &sums[0]));
	TRY(output(ctx, 2, &j.d, 1, &sums[1]));
	return acttap_run(ctx, &j, sums);
}

static OrtStatus *gelu_taps_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "GeluTaps";
	tensor x, u = {0};
	TRY(input(ctx, 0, &x, op));
	TRY(optional(ctx, 1, &u, op));
	if (x.rank < 1) return fail(op, "X must have rank 1 or more");
	if (u.data != NULL && !same_shape(&x, &u)) return fail(op, "U must have X's shape");
	acttap_job j = {.a = x.data, .b = u.data, .d = x.dims[x.rank - 1], .taps = u.data != NULL ? 2 : 1, .gelu = 1,
	                .tanh = ((rms_kernel *)k)->tanh};
	size_t outs = 0;
	TRY(api->KernelContext_GetOutputCount(ctx, &outs));
	if (outs != (size_t)(1 + j.taps)) return fail(op, "there is one sum per input: SX, and SU given U");
	j.rows = j.d == 0 ? 0 : x.count / j.d;
	float *sums[2];
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	for (int i = 0; i < j.taps; i++) TRY(output(ctx, 1 + (size_t)i, &j.d, 1, &sums[i]));
	return acttap_run(ctx, &j, sums);
}

// ---- LayerNorm ----
//
// LayerNorm(X[..., d], W[d], B[d]; epsilon) -> Y[..., d], Mean[..., 1], InvStd[..., 1]
// is ONNX's LayerNormalization over the last axis (two passes per row: the
// mean, then the mean square deviation from it), saving what the backward
// reuses; LayerNormGrad(dY, X, W, Mean, InvStd) -> dX, dW, dB does the
// backward in one pass over each row after its two sums, with dW and dB
// from per-block partial sums added in block order (colsum_block), as
// RMSNormGrad does. The operations and their order are those of migu's
// standard-op gradient rule for LayerNormalization (onnx/grad/reduce.go).

VECTOR static float ln_sum(const float *x, int64_t d) {
	wide acc = {0};
	int64_t j = 0;
	for (; j + WIDE <= d; j += WIDE) acc += load_wide(x + j);
	float s = wide_total(&acc);
	for (; j < d; j++) s += x[j];
	return s;
}

VECTOR static float ln_deviation(const float *x, float mean, int64_t d) {
	wide acc = {0};
	int64_t j = 0;
	for (; j + WIDE <= d; j += WIDE) {
		wide c = load_wide(x + j) - mean;
		acc += c * c;
	}
	float s = wide_total(&acc);
	for (; j < d; j++) s += (x[j] - mean) * (x[j] - mean);
	return s;
}

VECTOR static void ln_row(const float *x, const float *w, const float *b, float mean, float inv, float *y, int64_t d) {
	for (int64_t j = 0; j < d; j++) y[j] = ((x[j] - mean) * inv) * w[j] + b[j];
}

// ln_grad_sums returns sum of g = dy*w and, in *sgx, sum of g*xhat.
VECTOR static float ln_grad_sums(const float *dy, const float *w, const float *x, float mean, float inv, int64_t d,
                                 float *sgx) {
	wide a = {0}, b = {0};
	int64_t j = 0;
	for (; j + WIDE <= d; j += WIDE) {
		wide g = load_wide(dy + j) * load_wide(w + j);
		a += g;
		b += g * ((load_wide(x + j) - mean) * inv);
	}
	float sg = wide_total(&a), s2 = wide_total(&b);
	for (; j < d; j++) {
		float g = dy[j] * w[j];
		sg += g;
		s2 += g * ((x[j] - mean) * inv);
	}
	*sgx = s2;
	return sg;
}

// ln_grad_row writes dx = ((g - mg) - xhat*mgx) * inv and adds dy*xhat to
// dw and dy to db. The pointers are restrict (they never overlap) because
// GCC gives up vectorising with run-time alias checks for six of them.
VECTOR static void ln_grad_row(const float *restrict dy, const float *restrict w, const float *restrict x, float mean,
                               float inv, float mg, float mgx, float *restrict dx, float *restrict dw,
                               float *restrict db, int64_t d) {
	for (int64_t j = 0; j < d; j++) {
		float xhat = (x[j] - mean) * inv;
		dx[j] = ((dy[j] * w[j] - mg) - xhat * mgx) * inv;
		dw[j] += dy[j] * xhat;
		db[j] += dy[j];
	}
}

typedef struct {
	const float *x, *w, *b;
	float *y, *mean, *inv;
	int64_t rows, d;
	float eps;
} ln_job;

static void ln_block(void *p, size_t blk) {
	const ln_job *j = p;
	int64_t end = (int64_t)(blk + 1) * ROW_BLOCK;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)blk * ROW_BLOCK; r < end; r++) {
		const float *x = j->x + r * j->d;
		float mean = ln_sum(x, j->d) / (float)j->d;
		float var = ln_deviation(x, mean, j->d) / (float)j->d;
		float inv = 1.0f / sqrtf(var + j->eps);
		j->mean[r] = mean;
		j->inv[r] = inv;
		ln_row(x, j->w, j->b, mean, inv, j->y + r * j->d, j->d);
	}
}

static OrtStatus *ln_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "LayerNorm";
	tensor x, w, b;
	TRY(input(ctx, 0, &x, op));
	TRY(input(ctx, 1, &w, op));
	TRY(input(ctx, 2, &b, op));
	int64_t rows = 0;
	TRY(rowsOf(&x, &w, &rows, op));
	if (b.count != w.count) return fail(op, "B must have W's shape");
	ln_job j = {.x = x.data, .w = w.data, .b = b.data, .rows = rows, .d = w.dims[0], .eps = ((rms_kernel *)k)->epsilon};
	TRY(output(ctx, 0, x.dims, x.rank, &j.y));
	int64_t sdims[MAX_RANK];
	memcpy(sdims, x.dims, sizeof sdims);
	sdims[x.rank - 1] = 1;
	TRY(output(ctx, 1, sdims, x.rank, &j.mean));
	TRY(output(ctx, 2, sdims, x.rank, &j.inv));
	if (rows == 0) return NULL;
	return api->KernelContext_ParallelFor(ctx, ln_block, blocks(rows, ROW_BLOCK), 0, &j);
}

typedef struct {
	const float *dy, *x, *w, *mean, *inv, *res; // res: the Residual added to dX, or NULL
	float *dx, *pw, *pb;                        // pw, pb: one dW and one dB row per block
	int64_t rows, d;
} lngrad_job;

static void lngrad_block(void *p, size_t blk) {
	const lngrad_job *j = p;
	int64_t d = j->d;
	float *dw = j->pw + (int64_t)blk * d, *db = j->pb + (int64_t)blk * d;
	memset(dw, 0, (size_t)d * sizeof *dw);
	memset(db, 0, (size_t)d * sizeof *db);
	int64_t end = (int64_t)(blk + 1) * ROW_BLOCK;
	if (end > j->rows) end = j->rows;
	for (int64_t r = (int64_t)blk * ROW_BLOCK; r < end; r++) {
		const float *dy = j->dy + r * d, *x = j->x + r * d;
		float mean = j->mean[r], inv = j->inv[r], sgx;
		float mg = ln_grad_sums(dy, j->w, x, mean, inv, d, &sgx) / (float)d;
		ln_grad_row(dy, j->w, x, mean, inv, mg, sgx / (float)d, j->dx + r * d, dw, db, d);
		if (j->res != NULL) add_row(j->dx + r * d, j->res + r * d, d);
	}
}

static OrtStatus *lngrad_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "LayerNormGrad";
	tensor dy, x, w, mean, inv, res = {0};
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &x, op));
	TRY(input(ctx, 2, &w, op));
	TRY(input(ctx, 3, &mean, op));
	TRY(input(ctx, 4, &inv, op));
	TRY(optional(ctx, 5, &res, op));
	int64_t rows = 0;
	TRY(rowsOf(&x, &w, &rows, op));
	if (dy.count != x.count || mean.count != rows || inv.count != rows)
		return fail(op, "dY must have X's shape, Mean and InvStd one value per row");
	if (res.data != NULL && res.count != x.count) return fail(op, "Residual must have X's shape");
	lngrad_job j = {.dy = dy.data, .x = x.data, .w = w.data, .mean = mean.data, .inv = inv.data, .res = res.data, .rows = rows, .d = w.dims[0]};
	float *dw, *db;
	TRY(output(ctx, 0, x.dims, x.rank, &j.dx));
	TRY(output(ctx, 1, w.dims, 1, &dw));
	TRY(output(ctx, 2, w.dims, 1, &db));
	if (j.d == 0) return NULL;
	if (rows == 0) {
		memset(dw, 0, (size_t)j.d * sizeof *dw);
		memset(db, 0, (size_t)j.d * sizeof *db);
		return NULL;
	}
	size_t nb = blocks(rows, ROW_BLOCK);
	j.pw = malloc(2 * nb * (size_t)j.d * sizeof(float));
	if (j.pw == NULL) return api->CreateStatus(ORT_FAIL, "ai.migu.LayerNormGrad: out of memory");
	j.pb = j.pw + nb * (size_t)j.d;
	OrtStatus *s = api->KernelContext_ParallelFor(ctx, lngrad_block, nb, 0, &j);
	if (s == NULL) {
		colsum_job cj = {.partial = j.pw, .dw = dw, .nblocks = nb, .d = j.d};
		s = api->KernelContext_ParallelFor(ctx, colsum_block, blocks(j.d, COL_BLOCK), 0, &cj);
	}
	if (s == NULL) {
		colsum_job cj = {.partial = j.pb, .dw = db, .nblocks = nb, .d = j.d};
		s = api->KernelContext_ParallelFor(ctx, colsum_block, blocks(j.d, COL_BLOCK), 0, &cj);
	}
	free(j.pw);
	return s;
}

// ---- ScatterAddRows ----
//
// The gradient of Gather (an embedding's rows): Y, shaped like Table, is
// Base (zeros when absent) plus, at every row r of axis `axis`, the rows of
// Updates whose index is r. Updates is [outer, N, inner] for Table
// [outer, V, inner] (outer, inner: the products of the axes before and after
// `axis`) and N indices of any shape; negative indices count from V.
//
// The standard-op formulation is ScatterElements(zeros, indices repeated along
// the row, updates; reduction add), then Sum(other, ·) when the table has
// another gradient (a tied embedding). ORT adds there one float at a time
// through a generic loop on one thread, about 13 ns a float on Ice Lake, and
// fills and reads a table-sized zero tensor. Here each row's updates are
// summed in index order starting from 0, then Base is added: the bits of
// Sum(Base, ScatterElements(zeros, ...)) on any number of threads. The
// updates are bucketed by row first (a stable counting sort of the indices),
// so every output row is written once and the work splits over rows and
// column blocks without two threads touching one row. (Declaring Y may take
// Base's buffer, GetMayInplace, so that rows no index names need no copy:
// ORT 1.24 never handed the buffer over in these graphs.)

// Rows are taken SCATTER_ROWS at a time, and whole when they hold at most
// SCATTER_COLS floats (every table migu trains): a block's rows are then
// one piece of memory, and each run of rows no index names is filled with
// one memset or memcpy (row by row, the small llama's zero table took
// 40 % longer).
enum { SCATTER_ROWS = 32, SCATTER_COLS = 1024 };

typedef struct {
	const float *u, *base;
	float *y;
	const int64_t *start, *order; // row r's updates: order[start[r] .. start[r+1]), in index order
	int64_t outer, v, n, inner, rblocks, cblocks;
} scatter_job;

// scatter_row writes y = base + (0 + u[order[0]] + u[order[1]] + ...) over n
// columns (y = the sum without base), cnt >= 1 updates, stride floats apart.
VECTOR static void scatter_row(float *y, const float *base, const float *u, const int64_t *order, int64_t cnt,
                               int64_t stride, int64_t n) {
	float acc[SCATTER_COLS];
	const float *u0 = u + order[0] * stride;
	for (int64_t j = 0; j < n; j++) acc[j] = 0.0f + u0[j];
	for (int64_t k = 1; k < cnt; k++) {
		const float *uk = u + order[k] * stride;
		for (int64_t j = 0; j < n; j++) acc[j] += uk[j];
	}
	if (base == NULL)
		memcpy(y, acc, (size_t)n * sizeof *y);
	else
		for (int64_t j = 0; j < n; j++) y[j] = base[j] + acc[j];
}

static void scatter_block(void *p, size_t b) {
	const scatter_job *j = p;
	int64_t cb = (int64_t)b % j->cblocks, rest = (int64_t)b / j->cblocks;
	int64_t rb = rest % j->rblocks, o = rest / j->rblocks;
	int64_t c0 = cb * SCATTER_COLS, nc = j->inner - c0 < SCATTER_COLS ? j->inner - c0 : SCATTER_COLS;
	int64_t r0 = rb * SCATTER_ROWS, r1 = r0 + SCATTER_ROWS < j->v ? r0 + SCATTER_ROWS : j->v;
	const float *u = j->u + o * j->n * j->inner + c0;
	for (int64_t r = r0; r < r1;) {
		int64_t at = (o * j->v + r) * j->inner + c0, s = j->start[r], cnt = j->start[r + 1] - s;
		float *y = j->y + at;
		const float *base = j->base == NULL ? NULL : j->base + at;
		if (cnt > 0) {
			scatter_row(y, base, u, j->order + s, cnt, j->inner, nc);
			r++;
			continue;
		}
		// A run of rows without updates: contiguous when the rows are whole.
		int64_t end = r + 1;
		if (nc == j->inner)
			while (end < r1 && j->start[end + 1] == j->start[end]) end++;
		size_t bytes = (size_t)((end - r - 1) * j->inner + nc) * sizeof *y;
		if (base == NULL)
			memset(y, 0, bytes);
		else
			memcpy(y, base, bytes);
		r = end;
	}
}

static OrtStatus *scatter_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "ScatterAddRows";
	tensor table, idx, upd, base = {0};
	TRY(input(ctx, 0, &table, op));
	TRY(input(ctx, 1, &idx, op));
	TRY(input(ctx, 2, &upd, op));
	TRY(optional(ctx, 3, &base, op));
	int64_t axis = ((rms_kernel *)k)->axis, rank = (int64_t)table.rank;
	if (axis < 0) axis += rank;
	if (axis < 0 || axis >= rank) return fail(op, "axis out of Table's rank");
	scatter_job j = {.outer = 1, .inner = 1, .v = table.dims[axis], .n = idx.count};
	for (int64_t a = 0; a < axis; a++) j.outer *= table.dims[a];
	for (int64_t a = axis + 1; a < rank; a++) j.inner *= table.dims[a];
	if (upd.count != j.outer * j.n * j.inner)
		return fail(op, "Updates must hold, for each index, one row of Table along axis");
	if (base.data != NULL && base.count != table.count) return fail(op, "Base must have Table's shape");
	float *y;
	TRY(output(ctx, 0, table.dims, table.rank, &y));
	if (table.count == 0) return NULL;
	int64_t *start = calloc((size_t)(j.v + 1 + j.n), sizeof *start);
	if (start == NULL) return api->CreateStatus(ORT_FAIL, "ai.migu.ScatterAddRows: out of memory");
	int64_t *order = start + j.v + 1;
	const int64_t *ix = idx.data;
	for (int64_t i = 0; i < j.n; i++) {
		int64_t r = ix[i] < 0 ? ix[i] + j.v : ix[i];
		if (r < 0 || r >= j.v) {
			free(start);
			return fail(op, "an index is out of the table's range");
		}
		start[r + 1]++;
	}
	for (int64_t r = 0; r < j.v; r++) start[r + 1] += start[r];
	// Fill each row's slots in index order, start[r] advancing to start[r + 1];
	// then shift back.
	for (int64_t i = 0; i < j.n; i++) {
		int64_t r = ix[i] < 0 ? ix[i] + j.v : ix[i];
		order[start[r]++] = i;
	}
	for (int64_t r = j.v; r > 0; r--) start[r] = start[r - 1];
	start[0] = 0;
	j.u = upd.data;
	j.base = base.data;
	j.y = y;
	j.start = start;
	j.order = order;
	j.rblocks = (j.v + SCATTER_ROWS - 1) / SCATTER_ROWS;
	j.cblocks = (j.inner + SCATTER_COLS - 1) / SCATTER_COLS;
	OrtStatus *s = api->KernelContext_ParallelFor(ctx, scatter_block, (size_t)(j.outer * j.rblocks * j.cblocks), 0, &j);
	free(start);
	return s;
}

// ---- AddN ----
//
// AddN(X0, X1 [, X2 … X7]) -> Y = ((X0 + X1) + X2) + …, inputs of one
// shape: ONNX's Sum of same-shaped inputs in its order of additions, so
// its bits, in one pass over the inputs. ORT's Sum adds one input at a time
// over the whole tensor (0.37 ms for four [512, 512] inputs on 2 threads
// against 0.13 ms for two); here each block of ELEM_BLOCK values is summed
// in cache (kernels.FuseSums: a layer input's gradient from its query, key
// and value products and the residual).

enum { ADDN_MAX = 8 };

typedef struct {
	const float *x[ADDN_MAX];
	int nx;
	float *y;
	int64_t n;
} addn_job;

VECTOR static void add_into(const float *a, const float *b, float *y, int64_t n) {
	for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void addn_block(void *p, size_t b) {
	const addn_job *j = p;
	int64_t i0 = (int64_t)b * ELEM_BLOCK, n = j->n - i0 < ELEM_BLOCK ? j->n - i0 : ELEM_BLOCK;
	float *y = j->y + i0;
	add_into(j->x[0] + i0, j->x[1] + i0, y, n);
	for (int k = 2; k < j->nx; k++) add_into(y, j->x[k] + i0, y, n);
}

static OrtStatus *addn_compute(void *k, OrtKernelContext *ctx) {
	(void)k;
	const char *op = "AddN";
	size_t nin = 0;
	TRY(api->KernelContext_GetInputCount(ctx, &nin));
	addn_job j = {0};
	tensor first = {0};
	for (size_t i = 0; i < nin && i < ADDN_MAX; i++) {
		tensor t = {0};
		TRY(optional(ctx, i, &t, op));
		if (t.data == NULL && t.rank == 0) continue; // absent (a present tensor of rank 0 has its value)
		if (j.nx == 0) first = t;
		if (!same_shape(&first, &t)) return fail(op, "every input must have X0's shape");
		j.x[j.nx++] = t.data;
	}
	if (j.nx < 2) return fail(op, "needs two inputs or more");
	j.n = first.count;
	TRY(output(ctx, 0, first.dims, first.rank, &j.y));
	if (j.n == 0) return NULL;
	return api->KernelContext_ParallelFor(ctx, addn_block, blocks(j.n, ELEM_BLOCK), 0, &j);
}

// ---- Attention, AttentionGrad ----
//
// Attention(Q, K, V [, Bias]; alpha, permQ, permK, permV, permY) -> Y, LSE
//     q = transpose(Q, permQ) [B, H, R, D], k = transpose(K, permK) [B, Hk, S, D]
//     and v = transpose(V, permV) [B, Hk, S, E] (transpose as ONNX's: axis j
//     of q is axis permQ[j] of Q; perms absent are the identity), H a
//     multiple of Hk: query head h reads key-value head h / (H/Hk)
//     (grouped-query attention; Hk = H without groups);
//     Z = alpha · q·kᵀ (+ Bias, of rank 1 to 4, broadcast as ONNX's Add:
//     last axis S, every other axis [B, H, R]'s or 1, missing axes in front
//     1); P = softmax(Z) over S; Y = transpose(P·v, permY), axis i of Y
//     being axis permY[i] of P·v; LSE [B, H, R] = log Σ_s exp(Z) per row,
//     an optional output (the backward pass's).
// AttentionGrad(dY, Q, K, V, Y, LSE [, Bias]; the same attributes) -> dQ, dK, dV [, dZ]
//     the gradients of Q, K and V in their own layouts, and, when asked
//     for, dZ [B, H, R, S]: the gradient of Z (of Bias before it is reduced
//     to Bias's shape). P is recomputed from Z and LSE.
//
// One head's scores never leave the cache: the forward pass takes a block
// of a head's rows (as many as fit RB·S ≤ ATT_SCORES floats) through the
// scores product, the softmax and the context product; the backward pass
// takes one head in such row blocks, recomputing the probabilities from
// LSE and summing the key and value gradients over them, so key-value
// heads (with their groups of query heads) are its blocks of work. Keys a mask hides from every row of a tile (a causal
// mask's future, padding) are skipped in the products and the exps
// (att_limits): their probabilities are exactly 0 either way. The
// products are a small register-tiled kernel (AVX-512 FMA, 12 rows by 32
// columns; plain loops on other CPUs, where migu does not fuse attention)
// and the exps an FMA polynomial: results agree with the standard
// operators to float32 rounding, not bit for bit, and do not depend on the
// thread count.

// ATT_SCORES bounds a row block's scores (floats); ATT_MR is the product
// tile's rows; the forward pass splits heads into spans of row blocks
// where there are fewer than ATT_TASKS heads.
enum { ATT_SCORES = 32768, ATT_MR = 12, ATT_TASKS = 8 };

#define AVX512 __attribute__((target("avx512f")))

// att_avx512 tells whether the products take the AVX-512 kernel: the CPU
// has AVX-512F and MIGU_ATTENTION_PLAIN is unset or empty (tests set it to
// run the plain loops).
static int att_avx512(void) {
	const char *plain = getenv("MIGU_ATTENTION_PLAIN");
	return __builtin_cpu_supports("avx512f") && (plain == NULL || *plain == 0);
}

// A product C (=, or += when acc) alpha · A·B: A(i, p) at a[i*ai + p*ak],
// B row-major with row stride ldb, C row-major with row stride ldc.
typedef struct {
	const float *a, *b;
	float *c;
	int64_t ai, ak, ldb, ldc, m, n, k;
	float alpha;
	int acc, avx512;
	// nlim and klim, when set, bound a tile of rows: its columns from
	// nlim[i] on are not computed (left as they are), its sums stop at
	// klim[i] (i the tile's first row; equal within a tile); plim, for
	// products of a transposed A, skips the terms p with plim[p] <= i for
	// the tile of rows from i (the key and value gradients: a key tile
	// gets nothing from the query rows whose limit is below it). The plain
	// loops ignore them: callers leave what lies beyond them zero.
	const int64_t *nlim, *klim, *plim;
} gemm;

// gemm_tile computes the MR × 16·NV tile of g at row i, column j; the last
// vector of a row takes the columns in mask.
AVX512 static inline __attribute__((always_inline)) void gemm_tile(const gemm *g, int64_t i, int64_t j, int64_t k,
                                                                   const int MR, const int NV, __mmask16 mask) {
	__m512 s[ATT_MR][2];
	for (int r = 0; r < MR; r++)
		for (int v = 0; v < NV; v++) s[r][v] = _mm512_setzero_ps();
	const int64_t ai = g->ai, ak = g->ak, ldb = g->ldb;
	const float *ap = g->a + i * ai, *bp = g->b + j;
	const int64_t *plim = g->plim;
	for (int64_t p = 0; p < k; p++, ap += ak, bp += ldb) {
		if (plim != NULL && plim[p] <= i) continue;
		__m512 bv[2];
		for (int v = 0; v < NV; v++)
			bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(mask, bp + 16 * v) : _mm512_loadu_ps(bp + 16 * v);
		for (int r = 0; r < MR; r++) {
			__m512 x = _mm512_set1_ps(ap[r * ai]);
			for (int v = 0; v < NV; v++) s[r][v] = _mm512_fmadd_ps(x, bv[v], s[r][v]);
		}
	}
	__m512 alpha = _mm512_set1_ps(g->alpha);
	for (int r = 0; r < MR; r++) {
		float *c = g->c + (i + r) * g->ldc + j;
		for (int v = 0; v < NV; v++) {
			__mmask16 m = v == NV - 1 ? mask : 0xffff;
			__m512 y = _mm512_mul_ps(s[r][v], alpha);
			if (g->acc) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c + 16 * v));
			_mm512_mask_storeu_ps(c + 16 * v, m, y);
		}
	}
}

#define GEMM_ROWS(NV)                                                         \
	switch (mr) {                                                             \
	case 1: gemm_tile(g, i, j, k, 1, NV, mask); break;                           \
	case 2: gemm_tile(g, i, j, k, 2, NV, mask); break;                           \
	case 3: gemm_tile(g, i, j, k, 3, NV, mask); break;                           \
	case 4: gemm_tile(g, i, j, k, 4, NV, mask); break;                           \
	case 5: gemm_tile(g, i, j, k, 5, NV, mask); break;                           \
	case 6: gemm_tile(g, i, j, k, 6, NV, mask); break;                           \
	case 7: gemm_tile(g, i, j, k, 7, NV, mask); break;                           \
	case 8: gemm_tile(g, i, j, k, 8, NV, mask); break;                           \
	case 9: gemm_tile(g, i, j, k, 9, NV, mask); break;                           \
	case 10: gemm_tile(g, i, j, k, 10, NV, mask); break;                         \
	case 11: gemm_tile(g, i, j, k, 11, NV, mask); break;                         \
	default: gemm_tile(g, i, j, k, ATT_MR, NV, mask); break;                     \
	}

// gemm_avx512 runs g in tiles of 12 rows by 32 columns, column panels
// outermost so that a panel of B stays in cache across the rows.
AVX512 static void gemm_avx512(const gemm *g) {
	for (int64_t j = 0; j < g->n; j += 32) {
		int64_t cols = g->n - j < 32 ? g->n - j : 32;
		int nv = cols > 16 ? 2 : 1;
		int64_t tail = cols - 16 * (nv - 1);
		__mmask16 mask = (__mmask16)(tail >= 16 ? 0xffff : (1u << tail) - 1);
		for (int64_t i = 0; i < g->m; i += ATT_MR) {
			if (g->nlim != NULL && j >= g->nlim[i]) continue;
			int64_t mr = g->m - i < ATT_MR ? g->m - i : ATT_MR;
			int64_t k = g->klim != NULL && g->klim[i] < g->k ? g->klim[i] : g->k;
			if (nv == 2) {
				GEMM_ROWS(2)
			} else {
				GEMM_ROWS(1)
			}
		}
	}
}
#undef GEMM_ROWS

// gemm_plain is the same product in plain loops, for CPUs without AVX-512.
static void gemm_plain(const gemm *g) {
	for (int64_t i = 0; i < g->m; i++) {
		float *c = g->c + i * g->ldc;
		for (int64_t j = 0; j < g->n; j++) {
			float s = 0;
			for (int64_t p = 0; p < g->k; p++) s += g->a[i * g->ai + p * g->ak] * g->b[p * g->ldb + j];
			c[j] = g->acc ? c[j] + s * g->alpha : s * g->alpha;
		}
	}
}

static void run_gemm(const gemm *g) {
	if (g->m == 0 || g->n == 0) return;
	if (g->avx512)
		gemm_avx512(g);
	else
		gemm_plain(g);
}

// att_job is one Attention or AttentionGrad: the logical [B, H, rows, cols]
// views' element strides (bs 0 where Bias broadcasts), the sizes, and the
// row block.
typedef struct {
	const float *q, *k, *v, *bias, *dy, *yin, *lse_in;
	float *y, *lse, *dq, *dk, *dv, *dz;
	int64_t qs[4], ks[4], vs[4], ys[4], bs[4];
	int64_t b, h, hk, g, r, s, d, e, rb, span; // h query heads, hk key-value heads, g = h / hk
	float alpha;
	int avx512; // att_avx512()
	_Atomic int failed; // a block could not allocate its buffers
} att_job;

// att_buf returns the calling thread's buffer number slot, of at least n
// floats on a cache line, kept from one call to the next: a head's
// buffers are hundreds of kilobytes, which malloc would map and unmap
// (page faults on every block). A thread's buffers are freed when it ends
// (att_key's destructor). NULL when out of memory.
enum { ATT_BUFS = 11 };
typedef struct {
	float *p[ATT_BUFS];
	int64_t cap[ATT_BUFS];
} att_bufs;
static pthread_key_t att_key;
static pthread_once_t att_key_once = PTHREAD_ONCE_INIT;
static void att_free(void *p) {
	att_bufs *b = p;
	for (int i = 0; i < ATT_BUFS; i++) free(b->p[i]);
	free(b);
}
static void att_make_key(void) { pthread_key_create(&att_key, att_free); }
static float *att_buf(int slot, int64_t n) {
	pthread_once(&att_key_once, att_make_key);
	att_bufs *b = pthread_getspecific(att_key);
	if (b == NULL) {
		if ((b = calloc(1, sizeof *b)) == NULL) return NULL;
		if (pthread_setspecific(att_key, b) != 0) {
			free(b);
			return NULL;
		}
	}
	if (n < 1) n = 1;
	if (b->cap[slot] < n) {
		free(b->p[slot]);
		b->p[slot] = lines((size_t)n);
		b->cap[slot] = b->p[slot] != NULL ? n : 0;
	}
	return b->p[slot];
}

// gather copies rows × cols values of a strided view (row stride rs,
// column stride cs) into a dense rows × cols buffer; scatter copies back.
// A transposing gather (rs 1: kᵀ from k) reads x's rows whole and writes
// the buffer's columns; read column by column, rows a few kilobytes apart
// map to the same cache sets and evict each other. Both fetch the strided
// lines ATT_AHEAD lines of the view ahead: a head's rows are a few hundred
// bytes each, kilobytes apart, and waiting for each in turn took a
// quarter of the backward pass.
enum { ATT_AHEAD = 8 };

static inline void fetch_line(const float *p, int64_t n, int write) {
	for (int64_t c = 0; c < n; c += 16) {
		if (write)
			__builtin_prefetch(p + c, 1);
		else
			__builtin_prefetch(p + c, 0);
	}
}

// transpose16 writes the 16 × 16 block of a (rows a + r·lda) transposed
// into b (rows b + c·ldb) in registers: interleaving 32- and 64-bit
// elements leaves lane L of t[4i+k] holding column 4L+k of rows 4i…4i+3,
// and two rounds of 128-bit lane shuffles gather each column's four lanes.
AVX512 static inline __attribute__((always_inline)) void transpose16(const float *a, int64_t lda, float *b, int64_t ldb) {
	__m512 r[16], t[16];
	for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(a + i * lda);
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	for (int i = 0; i < 4; i++) {
		__m512d lo = _mm512_castps_pd(t[4 * i]), hi = _mm512_castps_pd(t[4 * i + 1]);
		__m512d lo2 = _mm512_castps_pd(t[4 * i + 2]), hi2 = _mm512_castps_pd(t[4 * i + 3]);
		r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
		r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
		r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
		r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
	}
	for (int k = 0; k < 4; k++) {
		t[k] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0x88);
		t[k + 4] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0xdd);
		t[k + 8] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0x88);
		t[k + 12] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0xdd);
	}
	for (int k = 0; k < 4; k++) {
		_mm512_storeu_ps(b + k * ldb, _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88));
		_mm512_storeu_ps(b + (k + 8) * ldb, _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd));
		_mm512_storeu_ps(b + (k + 4) * ldb, _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0x88));
		_mm512_storeu_ps(b + (k + 12) * ldb, _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0xdd));
	}
}

// gather_t512 is gather's transposing case in 16 × 16 blocks
// (transpose16), the edges one value at a time, the next block's rows
// fetched ahead. One value at a time, BenchmarkAttention (a layer forward
// and backward, 2 threads) took 2.48–2.57 ms on the small llama's shape
// and 2.99–3.15 on roberta's; in blocks 2.13–2.29 and 2.66–2.73.
AVX512 static void gather_t512(const float *x, int64_t cs, int64_t rows, int64_t cols, float *out) {
	int64_t rows16 = rows & ~(int64_t)15, cols16 = cols & ~(int64_t)15;
	for (int64_t j = 0; j < cols16; j += 16) {
		for (int64_t f = j + 16; f < j + 32 && f < cols; f++) fetch_line(x + f * cs, rows, 0);
		for (int64_t i = 0; i < rows16; i += 16) transpose16(x + j * cs + i, cs, out + i * cols + j, cols);
		for (int64_t jj = j; jj < j + 16; jj++)
			for (int64_t i = rows16; i < rows; i++) out[i * cols + jj] = x[jj * cs + i];
	}
	for (int64_t j = cols16; j < cols; j++)
		for (int64_t i = 0; i < rows; i++) out[i * cols + j] = x[j * cs + i];
}

static void gather(const float *x, int64_t rs, int64_t cs, int64_t rows, int64_t cols, float *out, int avx512) {
	if (rs == 1 && cs != 1 && avx512) {
		gather_t512(x, cs, rows, cols, out);
		return;
	}
	if (rs == 1 && cs != 1) {
		for (int64_t j = 0; j < cols; j++) {
			if (j + ATT_AHEAD < cols) fetch_line(x + (j + ATT_AHEAD) * cs, rows, 0);
			const float *col = x + j * cs;
			for (int64_t i = 0; i < rows; i++) out[i * cols + j] = col[i];
		}
		return;
	}
	for (int64_t i = 0; i < rows; i++) {
		const float *row = x + i * rs;
		if (cs == 1) {
			if (i + ATT_AHEAD < rows) fetch_line(x + (i + ATT_AHEAD) * rs, cols, 0);
			memcpy(out + i * cols, row, (size_t)cols * sizeof *out);
		} else {
			for (int64_t j = 0; j < cols; j++) out[i * cols + j] = row[j * cs];
		}
	}
}

static void scatter(const float *in, int64_t rows, int64_t cols, float *x, int64_t rs, int64_t cs) {
	for (int64_t i = 0; i < rows; i++) {
		float *row = x + i * rs;
		if (cs == 1) {
			if (i + ATT_AHEAD < rows) fetch_line(x + (i + ATT_AHEAD) * rs, cols, 1);
			memcpy(row, in + i * cols, (size_t)cols * sizeof *in);
		} else {
			for (int64_t j = 0; j < cols; j++) row[j * cs] = in[i * cols + j];
		}
	}
}

// head_at returns a view's origin for head (batch index bi, head hi).
static const float *head_at(const float *x, const int64_t *st, int64_t bi, int64_t hi) {
	return x + bi * st[0] + hi * st[1];
}

// exp_shift writes p_j = exp(z_j - lse).
VECTOR static void exp_shift(float *z, float lse, int64_t n) {
	int64_t j = 0;
	for (; j + XLANES <= n; j += XLANES) {
		vf v = vexp(vload(z + j) - lse);
		vstore(z + j, &v);
	}
	for (; j < n; j++) z[j] = xexp(z[j] - lse);
}

// exp512 is vexp's polynomial with fused multiply-adds and the 2^n scale
// by scalef: about half the instructions, at most a few ulp apart (the
// attention is not bit-exact anyway). Arguments below -87.3 give 0, as
// vexp's do; NaN stays NaN.
AVX512 static inline __attribute__((always_inline)) __m512 exp512(__m512 x) {
	const __m512 lo = _mm512_set1_ps(-87.3f);
	__mmask16 live = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
	__m512 xc = _mm512_max_ps(x, lo);
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(XEXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(XEXP_LN2HI), xc);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(XEXP_LN2LO), r);
	__m512 p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	__m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
	return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(e, n));
}

// ATT_LSE_EXACT: a log-sum-exp beyond it (a padding query, every key
// masked: its scores near -1e9) has lost the row's sum to rounding, so the
// backward pass takes that row's softmax again instead.
#define ATT_LSE_EXACT 1e5f

// recomputed tells whether the backward pass takes row i's softmax again.
static inline int recomputed(const float *lse, int64_t i) { return fabsf(lse[i]) > ATT_LSE_EXACT; }

// exp_rows512 replaces the first lim[i] values of each of rows rows of z
// (stride ld) by exp(z - shift), where shift is their maximum (lse NULL;
// its Σ exp goes to sums) or lse[i] (the backward's recomputed
// probabilities; rows recomputed() skipped).
AVX512 static void exp_rows512(float *z, int64_t rows, int64_t ld, const int64_t *lim, const float *lse, float *sums,
                               float *maxes) {
	for (int64_t i = 0; i < rows; i++) {
		float *zr = z + i * ld;
		int64_t n = lim[i];
		if (lse != NULL && recomputed(lse, i)) continue;
		float shift = lse != NULL ? lse[i] : (maxes[i] = row_max(zr, n));
		__m512 sh = _mm512_set1_ps(shift), acc = _mm512_setzero_ps();
		for (int64_t c = 0; c < n; c += 16) {
			__mmask16 m = n - c >= 16 ? 0xffff : (__mmask16)((1u << (n - c)) - 1);
			__m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, zr + c), sh));
			_mm512_mask_storeu_ps(zr + c, m, e);
			acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
		}
		if (sums != NULL) sums[i] = _mm512_reduce_add_ps(acc);
	}
}

// ATT_MASKED: a bias at or below it masks its key. The exporters' masks
// add -1e9 (exporters.MaskValue), after which exp(z - max) underflows to
// exactly 0 for any scores a float32 model makes (below 1e8 apart), so
// skipping such keys changes no result.
#define ATT_MASKED -1e8f

// att_limits sets lim for rows r0 .. r0+rows of a head: for each tile of
// ATT_MR rows (from r0, as the products tile them), the keys up to the
// last one any of its rows does not mask, rounded up to the products'
// 32 columns (at most S); every key where a row masks them all (a
// padding query). Beyond a tile's limit every key is masked for all its
// rows: the scores there are not computed, and the probabilities are 0.
static void att_limits(const att_job *j, int64_t bi, int64_t hi, int64_t r0, int64_t rows, int64_t *lim) {
	for (int64_t t = 0; t < rows; t += ATT_MR) {
		int64_t end = t + ATT_MR < rows ? t + ATT_MR : rows, most = j->bias == NULL ? j->s : 0;
		for (int64_t i = t; i < end && most < j->s; i++) {
			const float *b = head_at(j->bias, j->bs, bi, hi) + (r0 + i) * j->bs[2];
			int64_t live = j->s;
			while (live > 0 && b[live - 1] <= ATT_MASKED) live--;
			if (live == 0) live = j->s;
			if (live > most) most = live;
		}
		most = (most + 31) / 32 * 32;
		if (most > j->s) most = j->s;
		for (int64_t i = t; i < end; i++) lim[i] = most;
	}
}

// scores computes rows r0 .. r0+rows of one head's Z (with the bias) into
// z, from the packed kᵀ [d × s].
static void scores(const att_job *j, int64_t bi, int64_t hi, int64_t r0, int64_t rows, const float *q, const float *kt,
                   const int64_t *lim, float *z) {
	gemm g = {.a = q, .ai = j->d, .ak = 1, .b = kt, .ldb = j->s, .c = z, .ldc = j->s, .m = rows, .n = j->s, .k = j->d,
	          .alpha = j->alpha, .avx512 = j->avx512, .nlim = lim};
	run_gemm(&g);
	if (j->bias == NULL) return;
	const float *bias = head_at(j->bias, j->bs, bi, hi) + r0 * j->bs[2];
	for (int64_t i = 0; i < rows; i++) sum_rows(z + i * j->s, bias + i * j->bs[2], z + i * j->s, lim[i]);
}

// zero_tails clears each row of z (stride s) from lim[i] on.
static void zero_tails(float *z, int64_t rows, int64_t s, const int64_t *lim) {
	for (int64_t i = 0; i < rows; i++)
		if (lim[i] < s) memset(z + i * s + lim[i], 0, (size_t)(s - lim[i]) * sizeof *z);
}

// attention_block computes a span of one head's rows (j->span of them,
// the last span shorter), in row blocks of j->rb, packing kᵀ and v once.
static void attention_block(void *p, size_t blk) {
	att_job *j = p;
	int64_t spans = (j->r + j->span - 1) / j->span;
	int64_t head = (int64_t)blk / spans, first = ((int64_t)blk % spans) * j->span;
	int64_t bi = head / j->h, hi = head % j->h, last = first + j->span < j->r ? first + j->span : j->r;
	float *kt = att_buf(0, j->d * j->s), *v = att_buf(1, j->s * j->e), *z = att_buf(2, j->rb * j->s),
	      *y = att_buf(3, j->rb * j->e), *q = att_buf(4, j->rb * j->d), *sums = att_buf(5, 2 * j->rb);
	int64_t *lim = (int64_t *)att_buf(6, 2 * j->rb);
	if (kt == NULL || v == NULL || z == NULL || y == NULL || q == NULL || sums == NULL || lim == NULL) {
		j->failed = 1;
		return;
	}
	// kᵀ packed: column s of kt is row s of k.
	const float *k = head_at(j->k, j->ks, bi, hi / j->g);
	gather(k, j->ks[3], j->ks[2], j->d, j->s, kt, j->avx512);
	gather(head_at(j->v, j->vs, bi, hi / j->g), j->vs[2], j->vs[3], j->s, j->e, v, j->avx512);
	for (int64_t r0 = first; r0 < last; r0 += j->rb) {
		int64_t rows = last - r0 < j->rb ? last - r0 : j->rb;
		// q's rows gathered too: read in place, the product's twelve
		// strided row streams came from memory at every broadcast.
		gather(head_at(j->q, j->qs, bi, hi) + r0 * j->qs[2], j->qs[2], j->qs[3], rows, j->d, q, j->avx512);
		att_limits(j, bi, hi, r0, rows, lim);
		scores(j, bi, hi, r0, rows, q, kt, lim, z);
		float *lse = j->lse != NULL ? j->lse + (head * j->r + r0) : NULL, *maxes = sums + rows;
		if (j->avx512) {
			// The exps left unscaled; the context rows take 1 / Σ.
			exp_rows512(z, rows, j->s, lim, NULL, sums, maxes);
		} else {
			for (int64_t i = 0; i < rows; i++) {
				float *zr = z + i * j->s;
				maxes[i] = row_max(zr, lim[i]);
				sums[i] = sum_exp(zr, maxes[i], zr, lim[i]);
			}
		}
		zero_tails(z, rows, j->s, lim);
		if (lse != NULL)
			for (int64_t i = 0; i < rows; i++) lse[i] = maxes[i] + logf(sums[i]);
		gemm g = {.a = z, .ai = j->s, .ak = 1, .b = v, .ldb = j->e, .c = y, .ldc = j->e, .m = rows, .n = j->e,
		          .k = j->s, .alpha = 1, .avx512 = j->avx512, .klim = lim};
		run_gemm(&g);
		for (int64_t i = 0; i < rows; i++) scale_in_place(y + i * j->e, 1.0f / sums[i], j->e);
		scatter(y, rows, j->e, (float *)head_at(j->y, j->ys, bi, hi) + r0 * j->ys[2], j->ys[2], j->ys[3]);
	}
}

// attention_grad_block takes one key-value head and every query head of
// its group, summing their key and value gradients.
static void attention_grad_block(void *p, size_t kvhead) {
	att_job *j = p;
	int64_t bi = (int64_t)kvhead / j->hk, kh = (int64_t)kvhead % j->hk, rb = j->rb, s = j->s, d = j->d, e = j->e;
	float *kt = att_buf(0, d * s), *vt = att_buf(1, e * s), *k = att_buf(2, s * d), *dk = att_buf(3, s * d),
	      *dv = att_buf(4, s * e), *z = att_buf(5, rb * s), *dp = att_buf(6, rb * s), *q = att_buf(7, rb * d),
	      *dy = att_buf(8, rb * e), *dq = att_buf(9, rb * d);
	int64_t *lim = (int64_t *)att_buf(10, 2 * rb);
	float *bufs[] = {kt, vt, k, dk, dv, z, dp, q, dy, dq, (float *)lim};
	int ok = 1;
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ok = ok && bufs[i] != NULL;
	if (!ok) {
		j->failed = 1;
		return;
	}
	const float *kk = head_at(j->k, j->ks, bi, kh), *vv = head_at(j->v, j->vs, bi, kh);
	gather(kk, j->ks[3], j->ks[2], d, s, kt, j->avx512);
	gather(kk, j->ks[2], j->ks[3], s, d, k, j->avx512);
	gather(vv, j->vs[3], j->vs[2], e, s, vt, j->avx512);
	int summed = 0; // dk and dv hold a first sum
	for (int64_t hi = kh * j->g; hi < (kh + 1) * j->g; hi++) {
		int64_t head = bi * j->h + hi;
		const float *qh = head_at(j->q, j->qs, bi, hi), *dyh = head_at(j->dy, j->ys, bi, hi),
		            *yh = head_at(j->yin, j->ys, bi, hi), *lse = j->lse_in + head * j->r;
		for (int64_t r0 = 0; r0 < j->r; r0 += rb) {
			int64_t rows = j->r - r0 < rb ? j->r - r0 : rb;
			gather(qh + r0 * j->qs[2], j->qs[2], j->qs[3], rows, d, q, j->avx512);
			gather(dyh + r0 * j->ys[2], j->ys[2], j->ys[3], rows, e, dy, j->avx512);
			att_limits(j, bi, hi, r0, rows, lim);
			scores(j, bi, hi, r0, rows, q, kt, lim, z);
			gemm gp = {.a = dy, .ai = e, .ak = 1, .b = vt, .ldb = s, .c = dp, .ldc = s, .m = rows, .n = s, .k = e,
			           .alpha = 1, .avx512 = j->avx512, .nlim = lim};
			run_gemm(&gp);
			if (j->avx512) exp_rows512(z, rows, s, lim, lse + r0, NULL, NULL);
			for (int64_t i = 0; i < rows; i++) {
				float *zr = z + i * s, *dpr = dp + i * s;
				if (recomputed(lse + r0, i)) {
					float m = row_max(zr, lim[i]);
					scale_in_place(zr, 1.0f / sum_exp(zr, m, zr, lim[i]), lim[i]);
				} else if (!j->avx512) {
					exp_shift(zr, lse[r0 + i], lim[i]);
				}
				const float *yr = yh + (r0 + i) * j->ys[2];
				float delta = 0;
				if (j->ys[3] == 1) {
					delta = dot_row(dy + i * e, yr, e);
				} else {
					for (int64_t c = 0; c < e; c++) delta += dy[i * e + c] * yr[c * j->ys[3]];
				}
				softmax_grad_row(dpr, zr, delta, dpr, lim[i]);
			}
			// The key and value gradients sum over every key: the masked
			// tails are zero.
			zero_tails(z, rows, s, lim);
			zero_tails(dp, rows, s, lim);
			if (j->dz != NULL) memcpy(j->dz + (head * j->r + r0) * s, dp, (size_t)(rows * s) * sizeof *dp);
			gemm gq = {.a = dp, .ai = s, .ak = 1, .b = k, .ldb = d, .c = dq, .ldc = d, .m = rows, .n = d, .k = s,
			           .alpha = j->alpha, .avx512 = j->avx512, .klim = lim};
			run_gemm(&gq);
			scatter(dq, rows, d, (float *)head_at(j->dq, j->qs, bi, hi) + r0 * j->qs[2], j->qs[2], j->qs[3]);
			gemm gk = {.a = dp, .ai = 1, .ak = s, .b = q, .ldb = d, .c = dk, .ldc = d, .m = s, .n = d, .k = rows,
			           .alpha = j->alpha, .acc = summed, .avx512 = j->avx512, .plim = lim};
			run_gemm(&gk);
			gemm gv = {.a = z, .ai = 1, .ak = s, .b = dy, .ldb = e, .c = dv, .ldc = e, .m = s, .n = e, .k = rows,
			           .alpha = 1, .acc = summed, .avx512 = j->avx512, .plim = lim};
			run_gemm(&gv);
			summed = 1;
		}
	}
	if (!summed) {
		memset(dk, 0, (size_t)(s * d) * sizeof *dk);
		memset(dv, 0, (size_t)(s * e) * sizeof *dv);
	}
	scatter(dk, s, d, (float *)head_at(j->dk, j->ks, bi, kh), j->ks[2], j->ks[3]);
	scatter(dv, s, e, (float *)head_at(j->dv, j->vs, bi, kh), j->vs[2], j->vs[3]);
}

// view sets a tensor's logical dims and element strides through perm.
static void view(const tensor *t, const int64_t *perm, int64_t *dims, int64_t *strides) {
	int64_t dense[4];
	dense[3] = 1;
	for (int i = 2; i >= 0; i--) dense[i] = dense[i + 1] * t->dims[i + 1];
	for (int i = 0; i < 4; i++) dims[i] = t->dims[perm[i]], strides[i] = dense[perm[i]];
}

// att_setup checks Q, K, V and Bias and fills j's sizes, strides and
// Y's layout (ydims, Y's physical shape).
static OrtStatus *att_setup(const rms_kernel *kk, const tensor *q, const tensor *k, const tensor *v, const tensor *bias,
                            att_job *j, int64_t *ydims, const char *op) {
	if (q->rank != 4 || k->rank != 4 || v->rank != 4) return fail(op, "Q, K and V must be 4-D");
	int64_t qd[4], kd[4], vd[4];
	view(q, kk->perm[0], qd, j->qs);
	view(k, kk->perm[1], kd, j->ks);
	view(v, kk->perm[2], vd, j->vs);
	if (qd[0] != kd[0] || qd[0] != vd[0] || kd[1] != vd[1])
		return fail(op, "q, k and v must have the same batch axis, k and v the same head axis");
	if (kd[1] == 0 ? qd[1] != 0 : qd[1] % kd[1] != 0)
		return fail(op, "q's heads must be a multiple of k's and v's (grouped queries)");
	if (kd[2] != vd[2]) return fail(op, "k and v must have the same number of keys");
	if (qd[3] != kd[3]) return fail(op, "q and k must have the same last axis");
	j->b = qd[0], j->h = qd[1], j->hk = kd[1], j->r = qd[2], j->s = kd[2], j->d = qd[3], j->e = vd[3];
	j->g = j->hk > 0 ? j->h / j->hk : 1;
	if (bias->data != NULL) {
		// Bias broadcasts as ONNX's Add: axes missing in front are 1.
		int64_t zd[4] = {j->b, j->h, j->r, j->s}, bd[4] = {1, 1, 1, 1};
		if (bias->rank < 1 || bias->rank > 4) return fail(op, "Bias must have rank 1 to 4");
		for (size_t i = 0; i < bias->rank; i++) bd[4 - bias->rank + i] = bias->dims[i];
		if (bd[3] != j->s) return fail(op, "Bias's last axis must be the number of keys");
		int64_t stride = j->s;
		j->bs[3] = 1;
		for (int i = 2; i >= 0; i--) {
			if (bd[i] != zd[i] && bd[i] != 1) return fail(op, "every axis of Bias must be the scores' or 1");
			j->bs[i] = bd[i] == 1 ? 0 : stride;
			stride *= bd[i];
		}
	}
	int64_t yd[4] = {j->b, j->h, j->r, j->e}, dense[4];
	for (int i = 0; i < 4; i++) ydims[i] = yd[kk->perm[3][i]];
	dense[3] = 1;
	for (int i = 2; i >= 0; i--) dense[i] = dense[i + 1] * ydims[i + 1];
	for (int i = 0; i < 4; i++) j->ys[kk->perm[3][i]] = dense[i];
	j->alpha = kk->alpha;
	j->avx512 = att_avx512();
	return NULL;
}

// att_attributes reads Attention's alpha and perms into k.
static OrtStatus *att_attributes(const OrtKernelInfo *info, rms_kernel *k) {
	k->alpha = 1.0f;
	OrtStatus *s = api->KernelInfoGetAttribute_float(info, "alpha", &k->alpha);
	if (s != NULL) {
		api->ReleaseStatus(s);
		k->alpha = 1.0f;
	}
	static const char *names[4] = {"permQ", "permK", "permV", "permY"};
	for (int p = 0; p < 4; p++) {
		for (int i = 0; i < 4; i++) k->perm[p][i] = i;
		size_t size = 0;
		s = api->KernelInfoGetAttributeArray_int64(info, names[p], NULL, &size);
		if (s != NULL) {
			api->ReleaseStatus(s);
			continue;
		}
		char msg[96];
		snprintf(msg, sizeof msg, "%s must be a permutation of 0, 1, 2, 3", names[p]);
		if (size != 4) return fail("Attention", msg);
		TRY(api->KernelInfoGetAttributeArray_int64(info, names[p], k->perm[p], &size));
		int seen = 0;
		for (int i = 0; i < 4; i++) {
			if (k->perm[p][i] < 0 || k->perm[p][i] > 3 || (seen >> k->perm[p][i] & 1)) return fail("Attention", msg);
			seen |= 1 << k->perm[p][i];
		}
	}
	return NULL;
}

// att_rows gives the row block: as many rows as keep RB·S within
// ATT_SCORES, at least ATT_MR.
static int64_t att_rows(int64_t s) {
	int64_t rb = s > 0 ? ATT_SCORES / s : ATT_SCORES;
	return rb < ATT_MR ? ATT_MR : rb;
}

static OrtStatus *attention_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "Attention";
	tensor q, kt, v, bias = {0};
	TRY(input(ctx, 0, &q, op));
	TRY(input(ctx, 1, &kt, op));
	TRY(input(ctx, 2, &v, op));
	TRY(optional(ctx, 3, &bias, op));
	att_job j = {.q = q.data, .k = kt.data, .v = v.data, .bias = bias.data};
	int64_t ydims[4];
	TRY(att_setup(k, &q, &kt, &v, &bias, &j, ydims, op));
	TRY(output(ctx, 0, ydims, 4, &j.y));
	size_t outs = 0;
	TRY(api->KernelContext_GetOutputCount(ctx, &outs));
	if (outs > 1) {
		int64_t ld[3] = {j.b, j.h, j.r};
		TRY(output(ctx, 1, ld, 3, &j.lse));
	}
	int64_t heads = j.b * j.h;
	if (heads == 0 || j.r == 0 || j.e == 0) return NULL;
	if (j.s == 0) return fail(op, "there must be at least one key");
	j.rb = att_rows(j.s);
	if (j.rb > j.r) j.rb = j.r;
	// At least ATT_TASKS spans, so that every thread gets work, each as
	// many whole row blocks as that allows (k and v are packed once a
	// span): whole heads where there are enough of them.
	int64_t blocks = (j.r + j.rb - 1) / j.rb, parts = (ATT_TASKS + heads - 1) / heads;
	if (parts > blocks) parts = blocks;
	j.span = (blocks + parts - 1) / parts * j.rb;
	int64_t spans = (j.r + j.span - 1) / j.span;
	TRY(api->KernelContext_ParallelFor(ctx, attention_block, (size_t)(heads * spans), 0, &j));
	return j.failed ? api->CreateStatus(ORT_FAIL, "ai.migu.Attention: out of memory") : NULL;
}

static OrtStatus *attention_grad_compute(void *k, OrtKernelContext *ctx) {
	const char *op = "AttentionGrad";
	tensor dy, q, kt, v, y, lse, bias = {0};
	TRY(input(ctx, 0, &dy, op));
	TRY(input(ctx, 1, &q, op));
	TRY(input(ctx, 2, &kt, op));
	TRY(input(ctx, 3, &v, op));
	TRY(input(ctx, 4, &y, op));
	TRY(input(ctx, 5, &lse, op));
	TRY(optional(ctx, 6, &bias, op));
	att_job j = {.q = q.data, .k = kt.data, .v = v.data, .bias = bias.data, .dy = dy.data, .yin = y.data,
	             .lse_in = lse.data};
	int64_t ydims[4];
	TRY(att_setup(k, &q, &kt, &v, &bias, &j, ydims, op));
	if (y.rank != 4 || memcmp(y.dims, ydims, sizeof ydims) != 0 || dy.rank != 4 || memcmp(dy.dims, ydims, sizeof ydims) != 0)
		return fail(op, "dY and Y must have Attention's Y shape");
	if (lse.rank != 3 || lse.dims[0] != j.b || lse.dims[1] != j.h || lse.dims[2] != j.r)
		return fail(op, "LSE must be [B, H, R]");
	TRY(output(ctx, 0, q.dims, 4, &j.dq));
	TRY(output(ctx, 1, kt.dims, 4, &j.dk));
	TRY(output(ctx, 2, v.dims, 4, &j.dv));
	size_t outs = 0;
	TRY(api->KernelContext_GetOutputCount(ctx, &outs));
	if (outs > 3) {
		int64_t zd[4] = {j.b, j.h, j.r, j.s};
		TRY(output(ctx, 3, zd, 4, &j.dz));
	}
	int64_t heads = j.b * j.h;
	if (heads == 0) return NULL;
	if (j.s == 0 && j.r > 0) return fail(op, "there must be at least one key");
	j.rb = att_rows(j.s);
	TRY(api->KernelContext_ParallelFor(ctx, attention_grad_block, (size_t)(j.b * j.hk), 0, &j));
	return j.failed ? api->CreateStatus(ORT_FAIL, "ai.migu.AttentionGrad: out of memory") : NULL;
}

// ---- op table ----

typedef struct {
	OrtCustomOp base;
	const char *name;
	size_t nin, nout, optional_from; // inputs from optional_from on are optional
	ONNXTensorElementDataType in[8];
	OrtStatus *(*compute)(void *, OrtKernelContext *);
	int has_epsilon;
	int has_approximate; // reads the string attribute approximate ("none" or "tanh")
	int has_axis;        // reads the int attribute axis (default 0)
	int has_attention;   // reads alpha (default 1) and permQ, permK, permV, permY (default identity)
	size_t out_optional_from; // outputs from here on are optional; 0: none
} migu_op;

typedef struct {
	const migu_op *op;
	rms_kernel rms;
} kernel;

static const migu_op *self(const OrtCustomOp *op) { return (const migu_op *)op; }

static OrtStatus *ORT_API_CALL create_kernel(const OrtCustomOp *o, const OrtApi *a, const OrtKernelInfo *info,
                                             void **out) {
	(void)a;
	kernel *k = calloc(1, sizeof *k);
	if (k == NULL) return api->CreateStatus(ORT_FAIL, "ai.migu: out of memory");
	k->op = self(o);
	k->rms.epsilon = 1e-5f;
	if (k->op->has_epsilon) {
		float eps;
		OrtStatus *s = api->KernelInfoGetAttribute_float(info, "epsilon", &eps);
		if (s == NULL)
			k->rms.epsilon = eps;
		else
			api->ReleaseStatus(s);
	}
	if (k->op->has_axis) {
		OrtStatus *s = api->KernelInfoGetAttribute_int64(info, "axis", &k->rms.axis);
		if (s != NULL) {
			api->ReleaseStatus(s);
			k->rms.axis = 0;
		}
	}
	if (k->op->has_attention) {
		OrtStatus *s = att_attributes(info, &k->rms);
		if (s != NULL) {
			free(k);
			return s;
		}
	}
	if (k->op->has_approximate) {
		// Absent means "none"; the first call asks only for the value's size.
		char buf[8] = {0};
		size_t size = 0;
		OrtStatus *s = api->KernelInfoGetAttribute_string(info, "approximate", NULL, &size);
		if (s != NULL) {
			api->ReleaseStatus(s);
		} else if (size > sizeof buf ||
		           (s = api->KernelInfoGetAttribute_string(info, "approximate", buf, &size)) != NULL ||
		           (strcmp(buf, "tanh") != 0 && strcmp(buf, "none") != 0)) {
			if (s != NULL) api->ReleaseStatus(s);
			free(k);
			return api->CreateStatus(ORT_INVALID_ARGUMENT, "ai.migu.Gelu: attribute approximate must be \"none\" or \"tanh\"");
		} else {
			k->rms.tanh = strcmp(buf, "tanh") == 0;
		}
	}
	*out = k;
	return NULL;
}

static OrtStatus *ORT_API_CALL compute(void *k, OrtKernelContext *ctx) {
	kernel *kk = k;
	return kk->op->compute(&kk->rms, ctx);
}

static void ORT_API_CALL destroy(void *k) { free(k); }

static const char *ORT_API_CALL get_name(const OrtCustomOp *o) { return self(o)->name; }
static const char *ORT_API_CALL get_provider(const OrtCustomOp *o) {
	(void)o;
	return "CPUExecutionProvider";
}
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp *o, size_t i) { return self(o)->in[i]; }
static size_t ORT_API_CALL input_count(const OrtCustomOp *o) { return self(o)->nin; }
static size_t ORT_API_CALL output_count(const OrtCustomOp *o) { return self(o)->nout; }
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_char(const OrtCustomOp *o, size_t i) {
	return i >= self(o)->optional_from ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL output_char(const OrtCustomOp *o, size_t i) {
	size_t from = self(o)->out_optional_from;
	return from > 0 && i >= from ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

#define F ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
#define I64 ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
static migu_op ops[] = {
	{.name = "RMSNorm", .nin = 2, .nout = 2, .optional_from = 2, .in = {F, F}, .compute = rms_compute, .has_epsilon = 1},
	{.name = "RMSNormGrad", .nin = 5, .nout = 2, .optional_from = 4, .in = {F, F, F, F, F}, .compute = rmsgrad_compute},
	{.name = "AbsColSum", .nin = 2, .nout = 1, .optional_from = 1, .in = {F, I64}, .compute = tap_compute},
	{.name = "PickLogSoftmax", .nin = 2, .nout = 2, .optional_from = 2, .in = {F, I64}, .compute = pick_compute},
	{.name = "PickLogSoftmaxGrad", .nin = 4, .nout = 1, .optional_from = 4, .in = {F, F, I64, F}, .compute = pickgrad_compute},
	{.name = "Softmax", .nin = 2, .nout = 1, .optional_from = 1, .in = {F, F}, .compute = softmax_compute},
	{.name = "SoftmaxGrad", .nin = 2, .nout = 1, .optional_from = 2, .in = {F, F}, .compute = softmaxgrad_compute},
	{.name = "Rotary", .nin = 3, .nout = 1, .optional_from = 3, .in = {F, F, F}, .compute = rotary_compute},
	{.name = "RotaryGrad", .nin = 3, .nout = 1, .optional_from = 3, .in = {F, F, F}, .compute = rotarygrad_compute},
	{.name = "SwiGLU", .nin = 2, .nout = 1, .optional_from = 2, .in = {F, F}, .compute = swiglu_compute},
	{.name = "SwiGLUGrad", .nin = 3, .nout = 2, .optional_from = 3, .in = {F, F, F}, .compute = swiglu_grad_compute},
	{.name = "Gelu", .nin = 2, .nout = 1, .optional_from = 1, .in = {F, F}, .compute = gelu_compute, .has_approximate = 1},
	{.name = "GeluGrad", .nin = 3, .nout = 2, .optional_from = 2, .in = {F, F, F}, .compute = gelu_grad_compute,
	 .has_approximate = 1, .out_optional_from = 1},
	{.name = "SwiGLUTaps", .nin = 2, .nout = 3, .optional_from = 2, .in = {F, F}, .compute = swiglu_taps_compute},
	{.name = "GeluTaps", .nin = 2, .nout = 3, .optional_from = 1, .in = {F, F}, .compute = gelu_taps_compute,
	 .has_approximate = 1, .out_optional_from = 2},
	{.name = "LayerNorm", .nin = 3, .nout = 3, .optional_from = 3, .in = {F, F, F}, .compute = ln_compute, .has_epsilon = 1},
	{.name = "LayerNormGrad", .nin = 6, .nout = 3, .optional_from = 5, .in = {F, F, F, F, F, F}, .compute = lngrad_compute},
	{.name = "ScatterAddRows", .nin = 4, .nout = 1, .optional_from = 3, .in = {F, I64, F, F}, .compute = scatter_compute, .has_axis = 1},
	{.name = "AddN", .nin = 8, .nout = 1, .optional_from = 2, .in = {F, F, F, F, F, F, F, F}, .compute = addn_compute},
	{.name = "Attention", .nin = 4, .nout = 2, .optional_from = 3, .in = {F, F, F, F}, .compute = attention_compute,
	 .has_attention = 1, .out_optional_from = 1},
	{.name = "AttentionGrad", .nin = 7, .nout = 4, .optional_from = 6, .in = {F, F, F, F, F, F, F},
	 .compute = attention_grad_compute, .has_attention = 1, .out_optional_from = 3},
};
#undef F
#undef I64

static OrtCustomOpDomain *domain;
static OrtStatus *domain_status;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void make_domain(void) {
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		OrtCustomOp *o = &ops[i].base;
		op_defaults(o, MIGU_ORT_API);
		o->CreateKernelV2 = create_kernel;
		o->KernelComputeV2 = compute;
		o->KernelDestroy = destroy;
		o->GetName = get_name;
		o->GetExecutionProviderType = get_provider;
		o->GetInputType = input_type;
		o->GetInputTypeCount = input_count;
		o->GetOutputTypeCount = output_count;
		o->GetInputCharacteristic = input_char;
		o->GetOutputCharacteristic = output_char;
	}
	domain_status = api->CreateCustomOpDomain("ai.migu", &domain);
	for (size_t i = 0; domain_status == NULL && i < sizeof ops / sizeof ops[0]; i++)
		domain_status = api->CustomOpDomain_Add(domain, &ops[i].base);
}

// RegisterCustomOps is the entry point ONNX Runtime's RegisterCustomOpsLibrary
// looks for; migu calls it directly. The domain is made once per process and
// added to every session's options (it must outlive the sessions, so it is
// never released).
MIGU_EXPORT OrtStatus *ORT_API_CALL RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base) {
	if (api == NULL) {
		api = base->GetApi(MIGU_ORT_API);
		if (api == NULL) return NULL; // cannot even report: ORT is older than the API this library needs
	}
	pthread_once(&once, make_domain);
	if (domain_status != NULL) return api->CreateStatus(ORT_FAIL, api->GetErrorMessage(domain_status));
	return api->AddCustomOpDomain(options, domain);
}

// MiguKernelsVersion tells the loader which op set this build provides.
// It changes with the op set, together with LibVersion in onnx/kernels/fusions.go
// (the Go side refuses a library reporting another version).
MIGU_EXPORT const char *MiguKernelsVersion(void) { return "9"; }
