/* The batched MLP of nets.py as one fused CPU kernel: forward, loss, backward for K members.
 *
 * Why: at sweep sizes (widths 10-100, batches 10-128) one cohort step through torch is ~40 ops
 * at several microseconds each, and torch.bmm runs K tiny GEMMs one after another; the
 * arithmetic itself is a small fraction of that (notes/perf.md). Here the members are the
 * SIMD lanes: parameters are stored member-innermost ("SoA", element (q, k) at P[q * ldk + k]),
 * so V consecutive members' copies of one weight are one vector, and every member runs exactly
 * the same sequence of operations in its own lane. A member's numbers therefore do not depend on
 * its neighbours (cohort == alone), and the whole step is one call.
 *
 * nets.py is the reference: every formula below is the one written there (same order of
 * operations where it matters), and tests/test_kernel.py checks this file against it and
 * against autograd in float64. nets.py compiles this file on first use (cc -O3 -march=native)
 * and falls back to torch when no compiler is available.
 *
 * Layout of a network: cfg = [n_layers, activation, output, sizes[0..n_layers]]. Layer l has
 * fan-in fi = sizes[l], fan-out fo = sizes[l+1]; its parameters start at parameter index off_l:
 * W[i][o] at off_l + i * fo + o, then b[o] at off_l + fi * fo + o (nets.py's [W1, b1, W2, ...]
 * flattened). A batch is processed CHUNK rows at a time (every row's forward and backward is
 * independent; weight gradients are summed over rows in row order).
 */
#ifndef LR_T
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef LR_ONLY
#define LR_ONLY 0 /* 0: both dtypes here; 1: float32 only; 2: float64 only (compiled apart) */
#endif
#define MAXL 64
#define CHUNK 64
enum { ACT_LINEAR = 0, ACT_RELU = 1, ACT_LEAKY = 2, ACT_TANH = 3, ACT_SIGMOID = 4 };
enum { OUT_SOFTMAX = 0, OUT_SIGMOID = 1, OUT_QUADRATIC = 2 };
#define LEAKY_SLOPE 0.01 /* torch.nn.LeakyReLU's default, as nets.LEAKY_SLOPE */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define AI static inline __attribute__((always_inline))

/* Scratch buffers per thread, grown on demand (no allocation per call): 0 for a tile's
 * activations, 1 for the parameters of a tile with padding lanes. */
static __thread void *scratch_buf[2] = {NULL, NULL};
static __thread size_t scratch_len[2] = {0, 0};

static void *scratch(int which, size_t bytes) {
    if (bytes > scratch_len[which]) {
        free(scratch_buf[which]);
        scratch_buf[which] = NULL;
        scratch_len[which] = 0;
        if (posix_memalign(&scratch_buf[which], 64, bytes) != 0) return NULL;
        scratch_len[which] = bytes;
    }
    return scratch_buf[which];
}

#if LR_ONLY != 2
int lr_kernel_version(void) { return 3; }
#endif

#if LR_ONLY != 2
/* ---------------------------------------------------------------- data orders
 * engine.epoch_order(seed, epoch, n) is np.random.default_rng([seed, 0x5EED, epoch])
 * .permutation(n). The same numbers here, K members at once: numpy's SeedSequence (O'Neill's
 * seed_seq hash, pool of 4 words), PCG64 (XSL-RR 128/64) seeded from 4 of its words, and
 * Generator.shuffle's Fisher-Yates with masked rejection sampling (32-bit draws below 2^32).
 * nets.py checks this against numpy before using it. */

typedef unsigned __int128 u128;
typedef struct { u128 state, inc; int has32; uint32_t u32; } pcg64_t;

static uint32_t hashmix(uint32_t value, uint32_t *hash_const) {
    value ^= *hash_const;
    *hash_const *= 0x931e8875u;
    value *= *hash_const;
    value ^= value >> 16;
    return value;
}

static uint32_t mix32(uint32_t x, uint32_t y) {
    uint32_t r = 0xca01f9ddu * x - 0x4973f715u * y;
    return r ^ (r >> 16);
}

static int to_words(uint64_t v, uint32_t *w) { /* numpy's _int_to_uint32_array */
    int n = 0;
    if (v == 0) w[n++] = 0;
    while (v > 0) {
        w[n++] = (uint32_t)(v & 0xffffffffu);
        v >>= 32;
    }
    return n;
}

static void pcg_step(pcg64_t *r) {
    const u128 mult = ((u128)2549297995355413924ULL << 64) + 4865540595714422341ULL;
    r->state = r->state * mult + r->inc;
}

static uint64_t pcg_next64(pcg64_t *r) {
    pcg_step(r);
    uint64_t v = (uint64_t)(r->state >> 64) ^ (uint64_t)r->state;
    unsigned rot = (unsigned)(r->state >> 122);
    return (v >> rot) | (v << ((-rot) & 63));
}

static uint32_t pcg_next32(pcg64_t *r) {
    if (r->has32) {
        r->has32 = 0;
        return r->u32;
    }
    uint64_t v = pcg_next64(r);
    r->has32 = 1;
    r->u32 = (uint32_t)(v >> 32);
    return (uint32_t)(v & 0xffffffffu);
}

static uint64_t interval(pcg64_t *r, uint64_t max) { /* numpy's random_interval */
    if (max == 0) return 0;
    uint64_t mask = max, v;
    mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4;
    mask |= mask >> 8; mask |= mask >> 16; mask |= mask >> 32;
    if (max <= 0xffffffffULL)
        while ((v = (pcg_next32(r) & mask)) > max) {}
    else
        while ((v = (pcg_next64(r) & mask)) > max) {}
    return v;
}

/* out[k * n + i]: member k's order (seeds[k] >= 0, epoch >= 0). */
void lr_epoch_orders(const int64_t *seeds, int64_t K, int64_t epoch, int64_t n, int64_t *out) {
    for (int64_t k = 0; k < K; k++) {
        uint32_t ent[6];
        int L = to_words((uint64_t)seeds[k], ent);
        L += to_words(0x5EED, ent + L);
        L += to_words((uint64_t)epoch, ent + L);
        uint32_t pool[4], hc = 0x43b0d7e5u;
        for (int i = 0; i < 4; i++) pool[i] = hashmix(i < L ? ent[i] : 0, &hc);
        for (int s = 0; s < 4; s++)
            for (int d = 0; d < 4; d++)
                if (s != d) pool[d] = mix32(pool[d], hashmix(pool[s], &hc));
        for (int s = 4; s < L; s++)
            for (int d = 0; d < 4; d++) pool[d] = mix32(pool[d], hashmix(ent[s], &hc));
        uint32_t words[8], hb = 0x8b51f9ddu;
        for (int i = 0; i < 8; i++) {
            uint32_t v = pool[i % 4] ^ hb;
            hb *= 0x58f38dedu;
            v *= hb;
            words[i] = v ^ (v >> 16);
        }
        uint64_t st[4];
        for (int i = 0; i < 4; i++) st[i] = (uint64_t)words[2 * i] | ((uint64_t)words[2 * i + 1] << 32);
        pcg64_t r = {0, 0, 0, 0};
        r.inc = ((((u128)st[2] << 64) + st[3]) << 1) | 1;
        pcg_step(&r);
        r.state += ((u128)st[0] << 64) + st[1];
        pcg_step(&r);
        int64_t *o = out + k * n;
        for (int64_t i = 0; i < n; i++) o[i] = i;
        for (int64_t i = n - 1; i >= 1; i--) {
            int64_t j = (int64_t)interval(&r, (uint64_t)i);
            int64_t t = o[j];
            o[j] = o[i];
            o[i] = t;
        }
    }
}
#endif

/* ---------------------------------------------------------------- instantiations */
#if LR_ONLY != 2
#define LR_T float
#define LR_IT int32_t
#define LR_ISD 0
#define LR_V 16
#define SUF f32_16
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#define LR_V 8
#define SUF f32_8
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#define LR_V 4
#define SUF f32_4
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#undef LR_T
#undef LR_IT
#undef LR_ISD
#endif

#if LR_ONLY != 1
#define LR_T double
#define LR_IT int64_t
#define LR_ISD 1
#define LR_V 8
#define SUF f64_8
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#define LR_V 4
#define SUF f64_4
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#define LR_V 2
#define SUF f64_2
#include "nets_kernel.c"
#undef LR_V
#undef SUF
#undef LR_T
#undef LR_IT
#undef LR_ISD
#endif

/* ---------------------------------------------------------------- entry points
 * Members [k_begin, k_end) are cut into tiles of V lanes: the widest while 16 (float64: 8) or
 * more are left, then the remainder padded up to the next width (4, 8 or 16; float64 2, 4,
 * 8): a padded tile works on a copy of its members' parameters whose spare lanes repeat the
 * last member, and only the real lanes are written back. Every member is computed once, in
 * its own lane. Return 0 on success, 1 when the configuration is not supported, 2 when out of
 * memory. */

#define TILES(NAME, TS, V1, V2, V3, ...)                                                    \
    do {                                                                                 \
        (void)vmax;                                                                      \
        for (int64_t k0 = k_begin; k0 < k_end;) {                                        \
            int64_t left = k_end - k0;                                                   \
            int64_t v = left > V2 ? V1 : left > V3 ? V2 : V3;                            \
            int64_t live = left < v ? left : v;                                          \
            int r_ = v == V1   ? CAT(NAME, CAT(TS, V1))(k0, live, __VA_ARGS__)           \
                     : v == V2 ? CAT(NAME, CAT(TS, V2))(k0, live, __VA_ARGS__)           \
                               : CAT(NAME, CAT(TS, V3))(k0, live, __VA_ARGS__);          \
            if (r_) return r_;                                                           \
            k0 += live;                                                                  \
        }                                                                                \
        return 0;                                                                        \
    } while (0)

/* One step's gradients for members [k_begin, k_end): the mean batch loss's gradient for
 * positions b0 .. b0 + B of each member's order (member k reads rows idx[k * ldi + b0 ..];
 * ldi = 0 shares one order) into G (laid out like P), the summed batch loss into loss[k]. */
#define TRAIN_ARGS(T)                                                                      \
    const int64_t *cfg, const T *P, int64_t ldk, T *G, int64_t k_begin, int64_t k_end,     \
        int64_t vmax, const T *X, const int64_t *y, const int64_t *idx, int64_t ldi,       \
        int64_t b0, int64_t B, double *loss, double *correct
/* A whole epoch of plain SGD (torch.optim.SGD without momentum or weight decay) for members
 * [k_begin, k_end): for step s, the gradient g of the mean batch loss on positions
 * bounds[s] .. bounds[s+1] of each member's order, then P <- P + g * (-lr[s * ldl + k]) in
 * place. loss[k] = the batch losses summed over the epoch's samples. Each tile runs the whole
 * epoch before the next starts, so its parameters stay in cache. */
#define SGD_ARGS(T)                                                                        \
    const int64_t *cfg, T *P, int64_t ldk, int64_t k_begin, int64_t k_end, int64_t vmax,   \
        const T *X, const int64_t *y, const int64_t *idx, int64_t ldi,                     \
        const int64_t *bounds, int64_t steps, const T *lr, int64_t ldl, double *loss
/* Loss and accuracy of members [k_begin, k_end) on the shared rows X[0..N): out[0*K+k] the
 * summed loss and out[1*K+k] the correct count over rows < n_tr, out[2*K+k] and out[3*K+k]
 * over the rest. Z1: NULL, or the first layer's products X @ W1 (see evaluate). */
#define EVAL_ARGS(T)                                                                       \
    const int64_t *cfg, const T *P, int64_t ldk, int64_t K, int64_t k_begin, int64_t k_end, \
        int64_t vmax, const T *X, const T *Z1, int64_t ldz, const int64_t *y, int64_t N,   \
        int64_t n_tr, double *out

#if LR_ONLY != 2
int lr_train_f32(TRAIN_ARGS(float)) {
    TILES(grad, f32, 16, 8, 4, cfg, P, ldk, G, X, y, idx, ldi, b0, B, loss, correct);
}
int lr_sgd_epoch_f32(SGD_ARGS(float)) {
    TILES(sgd_epoch, f32, 16, 8, 4, cfg, P, ldk, X, y, idx, ldi, bounds, steps, lr, ldl,
          loss);
}
int lr_eval_f32(EVAL_ARGS(float)) {
    TILES(evaluate, f32, 16, 8, 4, cfg, P, ldk, K, X, Z1, ldz, y, N, n_tr, out);
}
/* The vector math, for tests: op 0 exp, 1 log, 2 log1p, 3 tanh, 4 sigmoid of x[0..n). */
int lr_math_f32(int op, const float *x, int64_t n, float *out) {
    float buf[16], res[16];
    for (int64_t i = 0; i < n; i += 16) {
        int64_t m = n - i < 16 ? n - i : 16;
        for (int j = 0; j < 16; j++) buf[j] = x[i + (j < m ? j : m - 1)];
        math_f32_16(op, buf, res);
        for (int j = 0; j < m; j++) out[i + j] = res[j];
    }
    return 0;
}
#endif

#if LR_ONLY != 1
int lr_train_f64(TRAIN_ARGS(double)) {
    TILES(grad, f64, 8, 4, 2, cfg, P, ldk, G, X, y, idx, ldi, b0, B, loss, correct);
}
int lr_sgd_epoch_f64(SGD_ARGS(double)) {
    TILES(sgd_epoch, f64, 8, 4, 2, cfg, P, ldk, X, y, idx, ldi, bounds, steps, lr, ldl,
          loss);
}
int lr_eval_f64(EVAL_ARGS(double)) {
    TILES(evaluate, f64, 8, 4, 2, cfg, P, ldk, K, X, Z1, ldz, y, N, n_tr, out);
}
int lr_math_f64(int op, const double *x, int64_t n, double *out) {
    double buf[8], res[8];
    for (int64_t i = 0; i < n; i += 8) {
        int64_t m = n - i < 8 ? n - i : 8;
        for (int j = 0; j < 8; j++) buf[j] = x[i + (j < m ? j : m - 1)];
        math_f64_8(op, buf, res);
        for (int j = 0; j < m; j++) out[i + j] = res[j];
    }
    return 0;
}
#endif

#else /* ================================================================ one (T, V) body */

#define T LR_T
#define V LR_V
#define FN(name) CAT(name, SUF)
#define VT FN(vt)
#define VI FN(vi)
#define VD FN(vd)
typedef LR_T VT __attribute__((vector_size(sizeof(LR_T) * LR_V)));
typedef LR_IT VI __attribute__((vector_size(sizeof(LR_T) * LR_V)));
typedef double VD __attribute__((vector_size(sizeof(double) * LR_V)));

AI VT FN(ld)(const T *p) { VT v; memcpy(&v, p, sizeof v); return v; }
AI void FN(st)(T *p, VT v) { memcpy(p, &v, sizeof v); }
AI VI FN(ldi)(const LR_IT *p) { VI v; memcpy(&v, p, sizeof v); return v; }
AI VT FN(bc)(T s) { return (VT){0} + s; }
AI VT FN(sel)(VI m, VT a, VT b) { return (VT)((m & (VI)a) | (~m & (VI)b)); }
AI VD FN(wide)(VT v) { return __builtin_convertvector(v, VD); }

#if LR_ISD
#define MANT 52
#define EXPMASK 0x7ffLL
#define BIAS 1023LL
#define SIGN ((LR_IT)INT64_MIN)
#define MMASK 0x000fffffffffffffLL
#define HALF_BITS 0x3fe0000000000000LL
#else
#define MANT 23
#define EXPMASK 0xff
#define BIAS 127
#define SIGN ((LR_IT)INT32_MIN)
#define MMASK 0x007fffff
#define HALF_BITS 0x3f000000
#endif

/* exp: Cody-Waite reduction x = n ln2 + r, then Cephes' approximation of exp(r) (a polynomial
 * in float, a Pade form in double; about 1 ulp); 2^n applied as two normal powers of two, so
 * results down into the subnormal range are right. Below the smallest subnormal, 0; above the
 * largest finite value, inf; NaN stays NaN. */
AI VT FN(vexp)(VT x) {
#if LR_ISD
    const T hi = 709.782712893384, lo = -745.2, magic = 6755399441055744.0;
    const T c1 = 6.93145751953125E-1, c2 = 1.42860682030941723212E-6;
#else
    const T hi = 88.72283905206835f, lo = -104.0f, magic = 12582912.0f;
    const T c1 = 0.693359375f, c2 = -2.12194440e-4f;
#endif
    VI over = x > hi, under = x < lo;
    VT xc = FN(sel)(over, FN(bc)(hi), x);
    xc = FN(sel)(under, FN(bc)(lo), xc);
    VT n = (xc * (T)1.44269504088896340736 + magic) - magic;
    VT r = xc - n * c1;
    r = r - n * c2;
#if LR_ISD
    VT xx = r * r;
    VT px = r * ((1.26177193074810590878E-4 * xx + 3.02994407707441961300E-2) * xx +
                 9.99999999999999999910E-1);
    VT qx = ((3.00198505138664455042E-6 * xx + 2.52448340349684104192E-3) * xx +
             2.27265548208155028766E-1) * xx + 2.00000000000000000009E0;
    VT p = 1.0 + 2.0 * (px / (qx - px));
#else
    VT z = r * r;
    VT p = ((((((T)1.9875691500E-4 * r + (T)1.3981999507E-3) * r + (T)8.3334519073E-3) * r +
              (T)4.1665795894E-2) * r + (T)1.6666665459E-1) * r + (T)5.0000001201E-1) * z +
           r + (T)1;
#endif
    VI ni = __builtin_convertvector(n, VI);
    VI n1 = ni >> 1, n2 = ni - n1; /* both in the normal exponent range */
    VT res = (p * (VT)((n1 + BIAS) << MANT)) * (VT)((n2 + BIAS) << MANT);
    res = FN(sel)(over, FN(bc)((T)INFINITY), res);
    return FN(sel)(under, FN(bc)((T)0), res);
}

/* log for x > 0 (and +inf, NaN, 0, negatives handled as libm): Cephes' approximation of
 * log(m) for the mantissa m in [sqrt(1/2), sqrt(2)), plus e ln2 in two parts. */
AI VT FN(vlog)(VT x) {
    VI bits = (VI)x;
    VI e = ((bits >> MANT) & EXPMASK) - (BIAS - 1);
    VT m = (VT)((bits & MMASK) | HALF_BITS); /* [0.5, 1) */
    VI small = m < (T)0.70710678118654752440;
    e = e + small; /* small is -1 where true */
    VT xm = FN(sel)(small, m + m - (T)1, m - (T)1);
    VT z = xm * xm;
    VT fe = __builtin_convertvector(e, VT);
#if LR_ISD
    VT pp = ((((1.01875663804580931796E-4 * xm + 4.97494994976747001425E-1) * xm +
               4.70579119878881725854E0) * xm + 1.44989225341610930846E1) * xm +
             1.79368678507819816313E1) * xm + 7.70838733755885391666E0;
    VT qq = ((((xm + 1.12873587189167450590E1) * xm + 4.52279145837532221105E1) * xm +
              8.29875266912776603211E1) * xm + 7.11544750618563894466E1) * xm +
            2.31251620126765340583E1;
    VT y = xm * (z * pp / qq);
    y = y - fe * 2.121944400546905827679e-4;
    y = y - 0.5 * z;
    VT res = xm + y;
    res = res + fe * 0.693359375;
#else
    VT y = ((((((((7.0376836292E-2f * xm - 1.1514610310E-1f) * xm + 1.1676998740E-1f) * xm -
                 1.2420140846E-1f) * xm + 1.4249322787E-1f) * xm - 1.6668057665E-1f) * xm +
              2.0000714765E-1f) * xm - 2.4999993993E-1f) * xm + 3.3333331174E-1f) * xm * z;
    y = y + fe * -2.12194440e-4f;
    y = y + z * -0.5f;
    VT res = xm + y;
    res = res + fe * 0.693359375f;
#endif
    res = FN(sel)(x == (T)INFINITY, x, res);
    res = FN(sel)(x == (T)0, FN(bc)(-(T)INFINITY), res);
    res = FN(sel)(x < (T)0, FN(bc)((T)NAN), res);
    return FN(sel)(x != x, x, res);
}

/* log1p(u) for u in [0, 1] (u = exp(-|z|)): log(1 + u) corrected for the rounding of 1 + u. */
AI VT FN(vlog1p)(VT u) {
    VT w = (T)1 + u;
    return FN(vlog)(w) - ((w - (T)1) - u) / w;
}

AI VT FN(vsigmoid)(VT z) { return (T)1 / ((T)1 + FN(vexp)(-z)); }

/* tanh: Cephes' rational approximation below 0.625, 1 - 2 / (exp(2|x|) + 1) above. */
AI VT FN(vtanh)(VT x) {
    VT a = (VT)((VI)x & ~SIGN);
    VT big = (T)1 - (T)2 / (FN(vexp)(a + a) + (T)1);
    big = (VT)((VI)big | ((VI)x & SIGN));
    VT s = x * x;
#if LR_ISD
    VT pp = (-9.64399179425052238628E-1 * s - 9.92877231001918586564E1) * s -
            1.61468768441708447952E3;
    VT qq = ((s + 1.12811678491632931402E2) * s + 2.23548839060100448583E3) * s +
            4.84406305325125486048E3;
    VT small = x + x * (s * (pp / qq));
#else
    VT small = ((((-5.70498872745E-3f * s + 2.06390887954E-2f) * s - 5.37397155531E-2f) * s +
                 1.33314422036E-1f) * s - 3.33332819422E-1f) * s * x + x;
#endif
    return FN(sel)(a >= (T)0.625, big, small);
}

__attribute__((unused)) static void FN(math)(int op, const T *x, T *out) {
    VT v = FN(ld)(x);
    switch (op) {
    case 0: v = FN(vexp)(v); break;
    case 1: v = FN(vlog)(v); break;
    case 2: v = FN(vlog1p)(v); break;
    case 3: v = FN(vtanh)(v); break;
    default: v = FN(vsigmoid)(v); break;
    }
    FN(st)(out, v);
}

AI VT FN(act)(int act, VT z) {
    switch (act) {
    case ACT_RELU: return FN(sel)(z > (T)0, z, FN(bc)((T)0));
    case ACT_LEAKY: return FN(sel)(z > (T)0, z, z * (T)LEAKY_SLOPE);
    case ACT_TANH: return FN(vtanh)(z);
    case ACT_SIGMOID: return FN(vsigmoid)(z);
    default: return z;
    }
}

/* dLoss/dz from dLoss/da and the activation's output a (nets.act_grad, applied as dz * g). */
AI VT FN(act_back)(int act, VT d, VT a) {
    switch (act) {
    case ACT_RELU: return FN(sel)(a > (T)0, d, FN(bc)((T)0));
    case ACT_LEAKY: return FN(sel)(a > (T)0, d, d * (T)LEAKY_SLOPE);
    case ACT_TANH: return d * ((T)1 - a * a);
    case ACT_SIGMOID: return d * (a * ((T)1 - a));
    default: return d;
    }
}

/* ---------------------------------------------------------------- the three small GEMMs
 * Cells are V-lane vectors. Activations and deltas of a chunk: cell (b, j) at [(b*w + j)*V].
 * Parameters (and gradients): cell q at P[q * ldk] (the tile's first lane already added).
 * An input given as shared rows X (bx) broadcasts X[b * fi + i] to every lane. */

/* Z[b][o] = bias[o] + sum_i A[b][i] W[i][o] over i in [i0, i1): the first part starts from
 * the bias, later parts from Z; the last applies the activation (none on the output layer,
 * act < 0). NR x NC register block at rows b.., outputs o..; 8 rows share each load of W. */
AI void FN(fwd_blk)(const int NR, const int NC, const int BC, int b, int o, int i0, int i1,
                    int fi, int fo, const T *A, const T *X, const T *W, int64_t ldk, T *Z,
                    int act) {
    VT acc[8][2];
    for (int c = 0; c < NC; c++) {
        VT bias = FN(ld)(W + ((int64_t)fi * fo + o + c) * ldk);
        for (int r = 0; r < NR; r++)
            acc[r][c] = i0 == 0 ? bias : FN(ld)(Z + ((int64_t)(b + r) * fo + o + c) * V);
    }
    for (int i = i0; i < i1; i++) {
        VT w[2];
        for (int c = 0; c < NC; c++) w[c] = FN(ld)(W + ((int64_t)i * fo + o + c) * ldk);
        for (int r = 0; r < NR; r++) {
            VT a = BC ? FN(bc)(X[(int64_t)(b + r) * fi + i])
                      : FN(ld)(A + ((int64_t)(b + r) * fi + i) * V);
            for (int c = 0; c < NC; c++) acc[r][c] += a * w[c];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++)
            FN(st)(Z + ((int64_t)(b + r) * fo + o + c) * V,
                   act < 0 || i1 < fi ? acc[r][c] : FN(act)(act, acc[r][c]));
}

#define ROW_BLOCKS(CALL)                                                                   \
    do {                                                                                   \
        int b = 0;                                                                         \
        for (; b + 8 <= nb; b += 8) CALL(8);                                               \
        if (b + 4 <= nb) { CALL(4); b += 4; }                                              \
        if (b + 2 <= nb) { CALL(2); b += 2; }                                              \
        if (b < nb) CALL(1);                                                               \
    } while (0)

#define ICHUNK 256 /* fan-in per pass: a part of W that stays in L2 while all rows use it */

static void FN(forward)(int nb, int fi, int fo, const T *A, const T *X, const T *W,
                        int64_t ldk, T *Z, int act) {
    for (int i0 = 0; i0 < fi; i0 += ICHUNK) {
        int i1 = fi - i0 < ICHUNK ? fi : i0 + ICHUNK;
#define FWD(NR, BC)                                                                        \
    do {                                                                                   \
        int o = 0;                                                                         \
        for (; o + 2 <= fo; o += 2)                                                        \
            FN(fwd_blk)(NR, 2, BC, b, o, i0, i1, fi, fo, A, X, W, ldk, Z, act);           \
        if (o < fo) FN(fwd_blk)(NR, 1, BC, b, o, i0, i1, fi, fo, A, X, W, ldk, Z, act);   \
    } while (0)
#define FWD_A(NR) FWD(NR, 0)
#define FWD_X(NR) FWD(NR, 1) /* inputs X shared by all lanes: broadcast */
        if (X)
            ROW_BLOCKS(FWD_X);
        else
            ROW_BLOCKS(FWD_A);
#undef FWD
#undef FWD_A
#undef FWD_X
    }
}

/* The chunk's weight gradient sum_b A[b][i] D[b][o], and where it goes: mode 0 stores it in
 * G[i][o], mode 1 adds it to G[i][o] (a later chunk of the same batch), mode 2 applies it as
 * plain SGD, G[i][o] <- G[i][o] + grad * nlr (G is then the parameters, nlr = -lr). */
AI void FN(dw_blk)(const int NR, const int NC, int i, int o, int nb, int fi, int fo,
                   const T *A, const T *D, T *G, int64_t ldk, int mode, VT nlr) {
    VT acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++)
            acc[r][c] = mode == 1 ? FN(ld)(G + ((int64_t)(i + r) * fo + o + c) * ldk)
                                  : FN(bc)((T)0);
    for (int b = 0; b < nb; b++) {
        VT d[4];
        for (int c = 0; c < NC; c++) d[c] = FN(ld)(D + ((int64_t)b * fo + o + c) * V);
        for (int r = 0; r < NR; r++) {
            VT a = FN(ld)(A + ((int64_t)b * fi + i + r) * V);
            for (int c = 0; c < NC; c++) acc[r][c] += a * d[c];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) {
            T *g = G + ((int64_t)(i + r) * fo + o + c) * ldk;
            FN(st)(g, mode == 2 ? FN(ld)(g) + acc[r][c] * nlr : acc[r][c]);
        }
}

static void FN(weight_grads)(int nb, int fi, int fo, const T *A, const T *D, T *G, int64_t ldk,
                             int mode, VT nlr) {
    int i = 0;
    for (; i + 4 <= fi; i += 4) {
        int o = 0;
        for (; o + 4 <= fo; o += 4) FN(dw_blk)(4, 4, i, o, nb, fi, fo, A, D, G, ldk, mode, nlr);
        for (; o < fo; o++) FN(dw_blk)(4, 1, i, o, nb, fi, fo, A, D, G, ldk, mode, nlr);
    }
    for (; i < fi; i++) {
        int o = 0;
        for (; o + 4 <= fo; o += 4) FN(dw_blk)(1, 4, i, o, nb, fi, fo, A, D, G, ldk, mode, nlr);
        for (; o < fo; o++) FN(dw_blk)(1, 1, i, o, nb, fi, fo, A, D, G, ldk, mode, nlr);
    }
    T *gb = G + (int64_t)fi * fo * ldk; /* the bias: sum_b D[b][o] */
    for (int o = 0; o < fo; o++) {
        VT acc = mode == 1 ? FN(ld)(gb + o * ldk) : FN(bc)((T)0);
        for (int b = 0; b < nb; b++) acc += FN(ld)(D + ((int64_t)b * fo + o) * V);
        FN(st)(gb + o * ldk, mode == 2 ? FN(ld)(gb + o * ldk) + acc * nlr : acc);
    }
}

/* Dp[b][i] = (sum_o D[b][o] W[i][o]) * act'(A[b][i]): the delta one layer down. */
AI void FN(da_blk)(const int NR, const int NC, int b, int i, int fi, int fo, const T *D,
                   const T *W, int64_t ldk, const T *A, T *Dp, int act) {
    VT acc[8][2];
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = FN(bc)((T)0);
    for (int o = 0; o < fo; o++) {
        VT w[2];
        for (int c = 0; c < NC; c++) w[c] = FN(ld)(W + ((int64_t)(i + c) * fo + o) * ldk);
        for (int r = 0; r < NR; r++) {
            VT d = FN(ld)(D + ((int64_t)(b + r) * fo + o) * V);
            for (int c = 0; c < NC; c++) acc[r][c] += d * w[c];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) {
            int64_t cell = ((int64_t)(b + r) * fi + i + c) * V;
            FN(st)(Dp + cell, FN(act_back)(act, acc[r][c], FN(ld)(A + cell)));
        }
}

static void FN(delta_down)(int nb, int fi, int fo, const T *D, const T *W, int64_t ldk,
                           const T *A, T *Dp, int act) {
#define DA(NR)                                                                             \
    do {                                                                                   \
        int i = 0;                                                                         \
        for (; i + 2 <= fi; i += 2) FN(da_blk)(NR, 2, b, i, fi, fo, D, W, ldk, A, Dp, act); \
        if (i < fi) FN(da_blk)(NR, 1, b, i, fi, fo, D, W, ldk, A, Dp, act);               \
    } while (0)
    ROW_BLOCKS(DA);
#undef DA
}

/* ---------------------------------------------------------------- loss (nets.loss_terms)
 * Row b's logits Z[b][0..C): its loss per lane, its correctness (1/0) per lane, and, when D is
 * given, dLoss_row/dz * scale into D[b][..]. */
static VT FN(row_loss)(int out, int C, const T *Z, VI y, T *D, T scale, VT *correct) {
    if (out == OUT_SIGMOID && C == 1) {
        VT z = FN(ld)(Z);
        VT t = FN(sel)(y == 1, FN(bc)((T)1), FN(bc)((T)0));
        VT za = (VT)((VI)z & ~SIGN);
        VT loss = (FN(sel)(z > (T)0, z, FN(bc)((T)0)) - z * t) + FN(vlog1p)(FN(vexp)(-za));
        if (D) FN(st)(D, (FN(vsigmoid)(z) - t) * scale);
        *correct = FN(sel)((z > (T)0) == (y == 1), FN(bc)((T)1), FN(bc)((T)0));
        return loss;
    }
    /* argmax, first maximum, NaN counts as the maximum (torch.argmax) */
    VT best = FN(ld)(Z);
    VI arg = (VI){0};
    for (int c = 1; c < C; c++) {
        VT z = FN(ld)(Z + (int64_t)c * V);
        VI take = (z > best) | ((z != z) & (best == best));
        best = FN(sel)(take, z, best);
        arg = (take & ((VI){0} + c)) | (~take & arg);
    }
    *correct = FN(sel)(arg == y, FN(bc)((T)1), FN(bc)((T)0));
    if (out == OUT_SOFTMAX) {
        VT m = FN(ld)(Z);
        for (int c = 1; c < C; c++) {
            VT z = FN(ld)(Z + (int64_t)c * V);
            m = FN(sel)(z > m, z, m);
        }
        VT s = FN(bc)((T)0), zy = FN(bc)((T)0);
        for (int c = 0; c < C; c++) {
            VT z = FN(ld)(Z + (int64_t)c * V);
            VT e = FN(vexp)(z - m);
            s += e;
            zy = FN(sel)(y == c, z, zy);
            if (D) FN(st)(D + (int64_t)c * V, e);
        }
        if (D)
            for (int c = 0; c < C; c++) {
                VT p = FN(ld)(D + (int64_t)c * V) / s;
                p = FN(sel)(y == c, p - (T)1, p);
                FN(st)(D + (int64_t)c * V, p * scale);
            }
        return (m + FN(vlog)(s)) - zy;
    }
    VT loss = FN(bc)((T)0);
    for (int c = 0; c < C; c++) {
        VT z = FN(ld)(Z + (int64_t)c * V);
        VT t = FN(sel)(y == c, FN(bc)((T)1), FN(bc)((T)0));
        if (out == OUT_SIGMOID) {
            VT za = (VT)((VI)z & ~SIGN);
            loss += (FN(sel)(z > (T)0, z, FN(bc)((T)0)) - z * t) + FN(vlog1p)(FN(vexp)(-za));
            if (D) FN(st)(D + (int64_t)c * V, ((FN(vsigmoid)(z) - t) / (T)C) * scale);
        } else { /* quadratic */
            VT a = FN(vsigmoid)(z);
            VT diff = a - t;
            loss += diff * diff;
            if (D) FN(st)(D + (int64_t)c * V, ((diff * a) * ((T)1 - a)) * scale);
        }
    }
    return out == OUT_SIGMOID ? loss / (T)C : (T)0.5 * loss;
}

/* ---------------------------------------------------------------- one tile of V members */

typedef struct {
    int L, act, out, width, hidden_width, sizes[MAXL + 1];
    int64_t off[MAXL], P;
} FN(net_t);

static int FN(parse)(const int64_t *cfg, FN(net_t) *n) {
    n->L = (int)cfg[0];
    n->act = (int)cfg[1];
    n->out = (int)cfg[2];
    if (n->L < 1 || n->L > MAXL) return 1;
    n->width = n->hidden_width = 0;
    for (int l = 0; l <= n->L; l++) {
        n->sizes[l] = (int)cfg[3 + l];
        if (n->sizes[l] > n->width) n->width = n->sizes[l];
        if (l > 0 && n->sizes[l] > n->hidden_width) n->hidden_width = n->sizes[l];
    }
    int64_t off = 0;
    for (int l = 0; l < n->L; l++) {
        n->off[l] = off;
        off += ((int64_t)n->sizes[l] + 1) * n->sizes[l + 1];
    }
    n->P = off;
    return 0;
}

/* Scratch of one tile's step: every layer's activations for CHUNK rows (A[0] = the gathered
 * inputs), two deltas, the labels, and (update mode, batches over CHUNK rows) a gradient. */
typedef struct {
    T *A[MAXL + 1], *D, *Dn, *G;
    LR_IT *lab;
} FN(ws_t);

static int FN(workspace)(const FN(net_t) *n, int with_g, FN(ws_t) *w) {
    int64_t cells = 0, aoff[MAXL + 1];
    for (int l = 0; l <= n->L; l++) {
        aoff[l] = cells;
        cells += (int64_t)CHUNK * n->sizes[l];
    }
    int64_t doff = cells;
    cells += 2 * (int64_t)CHUNK * n->width;
    int64_t goff = cells;
    if (with_g) cells += n->P;
    T *ws = scratch(0, (size_t)(cells * V) * sizeof(T) + (size_t)CHUNK * V * sizeof(LR_IT));
    if (!ws) return 2;
    for (int l = 0; l <= n->L; l++) w->A[l] = ws + aoff[l] * V;
    w->D = ws + doff * V;
    w->Dn = w->D + (int64_t)CHUNK * n->width * V;
    w->G = with_g ? ws + goff * V : NULL;
    w->lab = (LR_IT *)(ws + cells * V);
    return 0;
}

/* One batch for the tile's lanes (P, G at the tile's first lane): rows order[l][lo .. hi) of
 * X for lane l. Gradient mode (G given): the gradient of the mean
 * batch loss into G (cell q at G[q * ldk]). SGD mode (G NULL): P <- P + gradient * nlr.
 * Adds the summed batch loss to *lsum and the number of correct predictions to *csum. */
static void FN(batch)(const FN(net_t) *n, FN(ws_t) *w, T *P, int64_t ldk, T *G, const T *X,
                      const int64_t *y, const int64_t *const *order, int64_t lo, int64_t hi,
                      VT nlr, VD *lsum, VD *csum) {
    int L = n->L, d = n->sizes[0], C = n->sizes[L];
    int64_t B = hi - lo;
    const T scale = (T)(1.0 / (double)B);
    int sgd = G == NULL, direct = sgd && B <= CHUNK; /* SGD on one chunk: no gradient buffer */
    T *Gt = sgd ? w->G : G;
    int64_t ldg = sgd ? V : ldk;
    for (int64_t c0 = 0; c0 < B; c0 += CHUNK) {
        int nb = (int)(B - c0 < CHUNK ? B - c0 : CHUNK);
        for (int b = 0; b < nb; b++) { /* gather each lane's row and label */
            const T *src[V];
            for (int l = 0; l < V; l++) {
                int64_t row = order[l][lo + c0 + b];
                src[l] = X + row * d;
                w->lab[b * V + l] = (LR_IT)y[row];
            }
            T *dst = w->A[0] + (int64_t)b * d * V;
            for (int i0 = 0; i0 < d; i0 += 16) { /* 16 destination lines stay in L1 */
                int ni = d - i0 < 16 ? d - i0 : 16;
                for (int l = 0; l < V; l++)
                    for (int i = 0; i < ni; i++) dst[(int64_t)(i0 + i) * V + l] = src[l][i0 + i];
            }
        }
        for (int l = 0; l < L; l++)
            FN(forward)(nb, n->sizes[l], n->sizes[l + 1], w->A[l], NULL, P + n->off[l] * ldk,
                        ldk, w->A[l + 1], l == L - 1 ? -1 : n->act);
        T *D = w->D, *Dn = w->Dn;
        for (int b = 0; b < nb; b++) {
            VT corr;
            VT lb = FN(row_loss)(n->out, C, w->A[L] + (int64_t)b * C * V,
                                 FN(ldi)(w->lab + b * V), D + (int64_t)b * C * V, scale, &corr);
            *lsum += FN(wide)(lb);
            *csum += FN(wide)(corr);
        }
        for (int l = L - 1; l >= 0; l--) {
            int fi = n->sizes[l], fo = n->sizes[l + 1];
            if (l > 0) /* before W_l changes (direct SGD) */
                FN(delta_down)(nb, fi, fo, D, P + n->off[l] * ldk, ldk, w->A[l], Dn, n->act);
            if (direct)
                FN(weight_grads)(nb, fi, fo, w->A[l], D, P + n->off[l] * ldk, ldk, 2, nlr);
            else
                FN(weight_grads)(nb, fi, fo, w->A[l], D, Gt + n->off[l] * ldg, ldg, c0 > 0,
                                 nlr);
            T *t = D;
            D = Dn;
            Dn = t;
        }
    }
    if (sgd && !direct) /* the whole batch's gradient, applied once */
        for (int64_t q = 0; q < n->P; q++)
            FN(st)(P + q * ldk, FN(ld)(P + q * ldk) + FN(ld)(Gt + q * V) * nlr);
}

/* A tile's lanes: the member order rows of each lane (spare lanes repeat the last member). */
static void FN(lane_orders)(const int64_t *idx, int64_t ldi, int64_t k0, int64_t live,
                            const int64_t **order) {
    for (int l = 0; l < V; l++) order[l] = idx + (k0 + (l < live ? l : live - 1)) * ldi;
}

/* V values for the tile's lanes from p[0 .. live) (spare lanes repeat the last). */
AI VT FN(lanes)(const T *p, int64_t live) {
    if (live == V) return FN(ld)(p);
    T buf[V];
    for (int l = 0; l < V; l++) buf[l] = p[l < live ? l : live - 1];
    return FN(ld)(buf);
}

/* A padded tile's parameters: a [P][V] copy of lanes k0 .. k0 + live, spare lanes repeating
 * the last member (extra: room for as many values again, e.g. gradients). */
static T *FN(pad_copy)(const FN(net_t) *n, const T *P, int64_t ldk, int64_t k0, int64_t live,
                       int extra) {
    T *t = scratch(1, (size_t)(n->P * V) * sizeof(T) * (extra ? 2 : 1));
    if (!t) return NULL;
    for (int64_t q = 0; q < n->P; q++)
        for (int l = 0; l < V; l++) t[q * V + l] = P[q * ldk + k0 + (l < live ? l : live - 1)];
    return t;
}

static void FN(unpad)(const FN(net_t) *n, const T *t, T *P, int64_t ldk, int64_t k0,
                      int64_t live) {
    for (int64_t q = 0; q < n->P; q++)
        for (int l = 0; l < live; l++) P[q * ldk + k0 + l] = t[q * V + l];
}

static int FN(grad)(int64_t k0, int64_t live, const int64_t *cfg, const T *P, int64_t ldk,
                    T *G, const T *X, const int64_t *y, const int64_t *idx, int64_t ldi,
                    int64_t b0, int64_t B, double *loss, double *correct) {
    FN(net_t) n;
    FN(ws_t) w;
    const int64_t *order[V];
    if (FN(parse)(cfg, &n)) return 1;
    if (FN(workspace)(&n, 0, &w)) return 2;
    FN(lane_orders)(idx, ldi, k0, live, order);
    VD lsum = (VD){0}, csum = (VD){0};
    if (live == V) {
        FN(batch)(&n, &w, (T *)P + k0, ldk, G + k0, X, y, order, b0, b0 + B, FN(bc)((T)0),
                  &lsum, &csum);
    } else {
        T *Pt = FN(pad_copy)(&n, P, ldk, k0, live, 1);
        if (!Pt) return 2;
        T *Gt = Pt + n.P * V;
        FN(batch)(&n, &w, Pt, V, Gt, X, y, order, b0, b0 + B, FN(bc)((T)0), &lsum, &csum);
        FN(unpad)(&n, Gt, G, ldk, k0, live);
    }
    for (int l = 0; l < live; l++) loss[k0 + l] = lsum[l];
    if (correct)
        for (int l = 0; l < live; l++) correct[k0 + l] = csum[l];
    return 0;
}

static int FN(sgd_epoch)(int64_t k0, int64_t live, const int64_t *cfg, T *P, int64_t ldk,
                         const T *X, const int64_t *y, const int64_t *idx, int64_t ldi,
                         const int64_t *bounds, int64_t steps, const T *lr, int64_t ldl,
                         double *loss) {
    FN(net_t) n;
    FN(ws_t) w;
    const int64_t *order[V];
    if (FN(parse)(cfg, &n)) return 1;
    int64_t most = 0;
    for (int64_t s = 0; s < steps; s++)
        if (bounds[s + 1] - bounds[s] > most) most = bounds[s + 1] - bounds[s];
    if (FN(workspace)(&n, most > CHUNK, &w)) return 2;
    FN(lane_orders)(idx, ldi, k0, live, order);
    T *Pt = P + k0;
    int64_t ldt = ldk;
    if (live < V) {
        if (!(Pt = FN(pad_copy)(&n, P, ldk, k0, live, 0))) return 2;
        ldt = V;
    }
    VD lsum = (VD){0}, csum = (VD){0};
    for (int64_t s = 0; s < steps; s++)
        FN(batch)(&n, &w, Pt, ldt, NULL, X, y, order, bounds[s], bounds[s + 1],
                  -FN(lanes)(lr + s * ldl + k0, live), &lsum, &csum);
    if (live < V) FN(unpad)(&n, Pt, P, ldk, k0, live);
    for (int l = 0; l < live; l++) loss[k0 + l] = lsum[l];
    return 0;
}

#define ECHUNK_BYTES (256 * 1024) /* activations of an evaluation chunk: about half of L2 */

/* Z1 (optional): the first layer's products X @ W1 computed outside (a BLAS GEMM over all
 * members at once: row b's value for output o, lane k at Z1[b * ldz + o * ldk + k]); the
 * kernel then adds the bias, applies the activation and runs the other layers. */
static int FN(evaluate)(int64_t k0, int64_t live, const int64_t *cfg, const T *P, int64_t ldk,
                        int64_t K, const T *X, const T *Z1, int64_t ldz, const int64_t *y,
                        int64_t N, int64_t n_tr, double *out) {
    FN(net_t) n;
    if (FN(parse)(cfg, &n)) return 1;
    const T *Pk = P + k0;
    int64_t ldt = ldk;
    if (live < V) {
        if (!(Pk = FN(pad_copy)(&n, P, ldk, k0, live, 0))) return 2;
        ldt = V;
    }
    int L = n.L, d = n.sizes[0], C = n.sizes[L];
    int64_t rows = ECHUNK_BYTES / ((int64_t)n.hidden_width * V * (int64_t)sizeof(T));
    rows = rows < 8 ? 8 : rows > 512 ? 512 : rows;
    int64_t cells = 2 * rows * n.hidden_width; /* ping-pong activations (inputs read from X) */
    T *ws = scratch(0, (size_t)(cells * V) * sizeof(T) + (size_t)rows * V * sizeof(LR_IT));
    if (!ws) return 2;
    LR_IT *lab = (LR_IT *)(ws + cells * V);
    VD sums[4] = {(VD){0}, (VD){0}, (VD){0}, (VD){0}};
    for (int64_t c0 = 0; c0 < N; c0 += rows) {
        int nb = (int)(N - c0 < rows ? N - c0 : rows);
        T *A = ws, *Z = ws + rows * n.hidden_width * V;
        for (int l = 0; l < L; l++) {
            int fo = n.sizes[l + 1], act = l == L - 1 ? -1 : n.act;
            if (l == 0 && Z1) { /* bias and activation on the given products */
                const T *bias = Pk + (n.off[0] + (int64_t)d * fo) * ldt;
                for (int b = 0; b < nb; b++)
                    for (int o = 0; o < fo; o++) {
                        VT z = FN(lanes)(Z1 + (c0 + b) * ldz + o * ldk + k0, live) +
                               FN(ld)(bias + o * ldt);
                        FN(st)(Z + ((int64_t)b * fo + o) * V, act < 0 ? z : FN(act)(act, z));
                    }
            } else {
                FN(forward)(nb, n.sizes[l], fo, A, l == 0 ? X + c0 * d : NULL,
                            Pk + n.off[l] * ldt, ldt, Z, act);
            }
            T *t = A;
            A = Z;
            Z = t;
        }
        for (int b = 0; b < nb; b++)
            for (int l = 0; l < V; l++) lab[b * V + l] = (LR_IT)y[c0 + b];
        for (int b = 0; b < nb; b++) {
            VT corr;
            VT lb = FN(row_loss)(n.out, C, A + (int64_t)b * C * V, FN(ldi)(lab + b * V), NULL,
                                 (T)0, &corr);
            int part = c0 + b < n_tr ? 0 : 2;
            sums[part] += FN(wide)(lb);
            sums[part + 1] += FN(wide)(corr);
        }
    }
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < live; l++) out[p * K + k0 + l] = sums[p][l];
    return 0;
}

#undef T
#undef V
#undef FN
#undef VT
#undef VI
#undef VD
#undef MANT
#undef EXPMASK
#undef BIAS
#undef SIGN
#undef MMASK
#undef HALF_BITS
#endif
