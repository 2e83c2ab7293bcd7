// The small GEMMs of the recurrences, fp32, register-blocked.
//
// Forward products (out = bias + a1 @ B1 + a2 @ B2, row-major a and out)
// read B packed once per call into panels of kPanel columns, each panel's
// K rows contiguous (the last zero-padded), so the inner loop streams one
// panel in order. Blocks of kRows x kPanel outputs stay in registers while
// k runs (measured on 2-core AVX-512 VMs: 160-180 GFLOP/s a core at
// 32 x 128..256 x 512..1024, against 110-145 for a row-major B).
//
// Weight gradients (dw += aᵀ d over a block of P rows, P = steps x batch
// rows) read a row-major and d in panels of kPanel columns: a block of 8 dw
// rows takes 8 contiguous values of one row of a and one panel row of d per
// p (d row-major instead, its strips strided down P rows: 54-73 against
// 67-82 GFLOP/s, thread CPU time, loaded machine).

#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rj {

constexpr int64_t kRows = 8, kPanel = 32;

// The register blocks stay out of line: inlined into their callers, gcc 12
// spilled the accumulators of weight_block to the stack (half the speed).
#define RJ_BLOCK __attribute__((noinline))

// n rounded up to whole panels: the row stride of every buffer whose
// columns a weight-gradient product reads panel-wide.
inline int64_t padded(int64_t n) { return (n + kPanel - 1) / kPanel * kPanel; }

struct Panels {
  std::vector<float> data;  // (ceil(N / kPanel), K, kPanel)
  int64_t k = 0, n = 0;
};

// B = w (K, N) row-major, or with `transposed` B = wᵀ for w (N, K).
inline Panels pack_panels(const float* w, int64_t k, int64_t n, bool transposed) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  Panels b{std::vector<float>(panels * k * kPanel, 0.0f), k, n};
  for (int64_t q = 0; q < panels; ++q)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t c = 0; c < kPanel && q * kPanel + c < n; ++c) {
        const int64_t j = q * kPanel + c;
        b.data[(q * k + p) * kPanel + c] = transposed ? w[j * k + p] : w[p * n + j];
      }
  return b;
}

// One product of a sum: rows of `a` (row stride lda, b->k columns read)
// times the packed `b`.
struct Term {
  const float* a;
  int64_t lda;
  const Panels* b;
};

// R rows (from row i) x one panel q of bias + Σ terms, stored into the
// first `width` columns of out's R rows (stride ldo).
template <int64_t R>
RJ_BLOCK void product_block(const Term* terms, int64_t count, int64_t i, int64_t q,
                            const float* bias, float* __restrict__ out, int64_t ldo,
                            int64_t width) {
  float acc[R][kPanel] = {};
  if (bias)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < width; ++c) acc[r][c] = bias[c];
  for (int64_t s = 0; s < count; ++s) {
    const float* __restrict__ a = terms[s].a + i * terms[s].lda;
    const int64_t k = terms[s].b->k, lda = terms[s].lda;
    const float* __restrict__ panel = terms[s].b->data.data() + q * k * kPanel;
    for (int64_t p = 0; p < k; ++p) {
      const float* brow = panel + p * kPanel;
      for (int64_t r = 0; r < R; ++r) {
        const float av = a[r * lda + p];
        for (int64_t c = 0; c < kPanel; ++c) acc[r][c] += av * brow[c];
      }
    }
  }
  for (int64_t r = 0; r < R; ++r) std::copy(acc[r], acc[r] + width, out + r * ldo);
}

template <int64_t R>
void product_edge(int64_t rows, const Term* terms, int64_t count, int64_t i, int64_t q,
                  const float* bias, float* out, int64_t ldo, int64_t width) {
  if constexpr (R > 0) {
    if (rows == R) return product_block<R>(terms, count, i, q, bias, out, ldo, width);
    product_edge<R - 1>(rows, terms, count, i, q, bias, out, ldo, width);
  }
}

// out (m, n; row stride ldo) = bias + Σ terms a @ b (bias (n) or null for
// zero); every term's b has the same n.
inline void product(std::initializer_list<Term> terms, int64_t m, const float* bias, float* out,
                    int64_t ldo) {
  const Term* t = terms.begin();
  const int64_t count = static_cast<int64_t>(terms.size()), n = t->b->n;
  for (int64_t q = 0; q * kPanel < n; ++q) {
    const int64_t j = q * kPanel, width = std::min(kPanel, n - j);
    const float* panel_bias = bias ? bias + j : nullptr;
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows)
      product_block<kRows>(t, count, i, q, panel_bias, out + i * ldo + j, ldo, width);
    product_edge<kRows - 1>(m - i, t, count, i, q, panel_bias, out + i * ldo + j, ldo, width);
  }
}

// dw rows [i, i + R) x columns [j, j + width) += aᵀ d over P rows: a (P, ·)
// stride lda, d (P, kPanel) stride ldd.
template <int64_t R>
RJ_BLOCK void weight_block(const float* __restrict__ a, int64_t lda,
                           const float* __restrict__ d, int64_t ldd, int64_t P,
                           float* __restrict__ dw, int64_t ldw, int64_t width) {
  float acc[R][kPanel] = {};
  for (int64_t p = 0; p < P; ++p) {
    const float* arow = a + p * lda;
    const float* drow = d + p * ldd;
    for (int64_t r = 0; r < R; ++r) {
      const float av = arow[r];
      for (int64_t c = 0; c < kPanel; ++c) acc[r][c] += av * drow[c];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) dw[r * ldw + c] += acc[r][c];
}

template <int64_t R>
void weight_edge(int64_t rows, const float* a, int64_t lda, const float* d, int64_t ldd, int64_t P,
                 float* dw, int64_t ldw, int64_t width) {
  if constexpr (R > 0) {
    if (rows == R) return weight_block<R>(a, lda, d, ldd, P, dw, ldw, width);
    weight_edge<R - 1>(rows, a, lda, d, ldd, P, dw, ldw, width);
  }
}

// dw (k, n; row stride n) += aᵀ d: a (P, k) stride lda, d (P, n) in panels
// (panel q's row p at d + (q * cap + p) * kPanel, columns past n zero).
inline void weight_product(const float* a, int64_t lda, int64_t k, const float* d, int64_t cap,
                           int64_t n, int64_t P, float* dw) {
  for (int64_t j = 0; j < n; j += kPanel) {
    const int64_t width = std::min(kPanel, n - j);
    const float* panel = d + j * cap;
    int64_t i = 0;
    for (; i + kRows <= k; i += kRows)
      weight_block<kRows>(a + i, lda, panel, kPanel, P, dw + i * n + j, n, width);
    weight_edge<kRows - 1>(k - i, a + i, lda, panel, kPanel, P, dw + i * n + j, n, width);
  }
}

// sums (count) += the sums over P rows of columns [first, first + count) of
// d in panels, as in weight_product.
inline void column_sums(const float* d, int64_t cap, int64_t first, int64_t count, int64_t P,
                        float* sums) {
  for (int64_t j = first / kPanel * kPanel; j < first + count; j += kPanel) {
    float panel_sums[kPanel] = {};
    const float* panel = d + j * cap;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < kPanel; ++c) panel_sums[c] += panel[p * kPanel + c];
    for (int64_t c = std::max(first, j); c < std::min(first + count, j + kPanel); ++c)
      sums[c - first] += panel_sums[c - j];
  }
}

}  // namespace rj
