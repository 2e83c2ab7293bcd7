// The GRU (gates r z n, reset after: n = tanh(x_n + r * (h W_n + b_hn)))
// over one run's rows b0..b1, all T steps. Each step takes two products,
// bias + x_t W_ih and h W_hh, into buffers of the step's rows: the
// projected inputs of all steps are never written. Layouts as in lstm.h.

#pragma once

#include <cstdint>
#include <vector>

#include "gemm.h"
#include "profile.h"
#include "steps.h"

namespace rj {

// One run's buffers of a forward call; the residuals (gates, hn, h_prev)
// are null in an inference call, as in LstmForward.
struct GruForward {
  const float *x, *valid, *bias, *b_hn, *h0, *reset_h;
  float *ys, *h_last, *h_all, *gates, *hn, *h_prev;
  int64_t T, B, I, H;
};

// W_ih (I, 3H) and W_hh (H, 3H) packed, or their transposes.
struct GruWeights {
  Panels ih, hh;
};

// The gates (r z n) of one row from x = bias + x W_ih and q = h W_hh, hn
// = q_n + b_hn, and h updated in place when the step is valid.
inline void gru_cell(const float* __restrict__ x, const float* __restrict__ q,
                     const float* __restrict__ bn, float* __restrict__ g, float* __restrict__ hn,
                     float* __restrict__ h, float* __restrict__ y, float* sum, bool valid,
                     int64_t H) {
  for (int64_t u = 0; u < 2 * H; ++u) sum[u] = x[u] + q[u];
  sigmoid_into(sum, g, 2 * H);  // r, z
  for (int64_t u = 0; u < H; ++u) {
    hn[u] = q[2 * H + u] + bn[u];
    sum[u] = x[2 * H + u] + g[u] * hn[u];
  }
  tanh_into(sum, g + 2 * H, H);
  if (!valid) {
    std::fill(y, y + H, 0.0f);
    return;
  }
  for (int64_t u = 0; u < H; ++u) {
    const float z = g[H + u], n = g[2 * H + u];
    y[u] = h[u] = (1.0f - z) * n + z * h[u];
  }
}

inline void gru_rows(const GruForward& a, const GruWeights& w, int64_t b0, int64_t b1) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H, G = 3 * H, rows = b1 - b0;
  const int64_t ldp = padded(G);
  std::vector<float> h(a.h0 + b0 * H, a.h0 + b1 * H);
  std::vector<float> gx(rows * ldp), gh(rows * ldp), sum(2 * H);
  std::vector<float> scratch(a.gates ? 0 : G), hn_scratch(a.hn ? 0 : H);
  Laps laps(label("gru forward rows", b0, b1), {"product", "cell"});
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row0 = t * B + b0;
    restart_rows(a.valid, row0, a.reset_h, h.data(), b0, rows, H);
    product({{a.x + row0 * I, I, &w.ih}}, rows, a.bias, gx.data(), ldp);
    product({{h.data(), H, &w.hh}}, rows, nullptr, gh.data(), ldp);
    laps(0);
    if (a.h_prev) copy_floats(a.h_prev + row0 * H, h.data(), rows * H);
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t r = row0 + b;
      gru_cell(gx.data() + b * ldp, gh.data() + b * ldp, a.b_hn,
               a.gates ? a.gates + r * G : scratch.data(), a.hn ? a.hn + r * H : hn_scratch.data(),
               h.data() + b * H, a.ys + r * H, sum.data(), is_valid(a.valid, r), H);
    }
    if (a.h_all) copy_floats(a.h_all + row0 * H, h.data(), rows * H);
    laps(1);
  }
  std::copy(h.begin(), h.end(), a.h_last + b0 * H);
}

// One run's buffers of a backward call; the weight gradients (d_w_ih,
// d_w_hh, d_bias, d_b_hn) are added into, the rest written.
struct GruBackward {
  const float *x, *valid, *gates, *hn, *h_prev, *d_ys, *d_h_last, *d_h_all;
  float *d_x, *d_h0, *d_reset_h, *d_w_ih, *d_w_hh, *d_bias, *d_b_hn;
  int64_t T, B, I, H;
};

// The cotangents of one valid row's x W_ih + bias (dx) and h W_hh (dq),
// and of h_{t-1} along the direct path (dh, with dy added on the way in).
inline void gru_cell_backward(const float* __restrict__ g, const float* __restrict__ hn,
                              const float* __restrict__ hp, const float* __restrict__ dy,
                              float* __restrict__ dh, float* __restrict__ dx,
                              float* __restrict__ dq, int64_t H) {
  for (int64_t u = 0; u < H; ++u) {
    const float r = g[u], z = g[H + u], n = g[2 * H + u];
    const float dhu = dh[u] + dy[u];
    const float dn = dhu * (1.0f - z) * (1.0f - n * n);
    const float dz = dhu * (hp[u] - n) * z * (1.0f - z);
    const float dr = dn * hn[u] * r * (1.0f - r);
    dx[u] = dq[u] = dr;
    dx[H + u] = dq[H + u] = dz;
    dx[2 * H + u] = dn;
    dq[2 * H + u] = dn * r;
    dh[u] = dhu * z;  // the direct path; W_hh's is added by the caller
  }
}

// Adds the block's weight gradients: dW_ih += xᵀ dx, dW_hh += h_prevᵀ dq,
// d_bias += Σ dx, d_b_hn += Σ dq_n; then empties the block.
inline void gru_flush(StepBlock& blk, const GruBackward& a) {
  const int64_t I = a.I, H = a.H, G = 3 * H, P = blk.P();
  weight_product(blk.x.get(), blk.ldx, I, blk.panels_of(0), blk.cap, G, P, a.d_w_ih);
  weight_product(blk.h.get(), blk.ldh, H, blk.panels_of(1), blk.cap, G, P, a.d_w_hh);
  column_sums(blk.panels_of(0), blk.cap, 0, G, P, a.d_bias);
  column_sums(blk.panels_of(1), blk.cap, 2 * H, H, P, a.d_b_hn);
  blk.filled = 0;
}

inline void gru_rows_backward(const GruBackward& a, const GruWeights& wt, int64_t b0, int64_t b1) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H, G = 3 * H, rows = b1 - b0;
  StepBlock blk(rows, I, H, G, 2);
  std::vector<float> dh(a.d_h_last + b0 * H, a.d_h_last + b1 * H), dh_prev(rows * H);
  Laps laps(label("gru backward rows", b0, b1), {"cell", "products", "weights"});
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row0 = t * B + b0;
    add_rows(a.d_h_all, row0, dh.data(), rows, H);  // the carry after step t, used outside
    float *dx = blk.step(0), *dq = blk.step(1);
    for (int64_t b = 0; b < rows; ++b) {
      float *dxb = dx + b * blk.ldd, *dqb = dq + b * blk.ldd;
      const int64_t r = row0 + b;
      if (!is_valid(a.valid, r)) {
        std::fill(dxb, dxb + G, 0.0f);
        std::fill(dqb, dqb + G, 0.0f);
        continue;
      }
      gru_cell_backward(a.gates + r * G, a.hn + r * H, a.h_prev + r * H, a.d_ys + r * H,
                        dh.data() + b * H, dxb, dqb, H);
    }
    laps(0);
    product({{dx, blk.ldd, &wt.ih}}, rows, nullptr, a.d_x + row0 * I, I);
    product({{dq, blk.ldd, &wt.hh}}, rows, nullptr, dh_prev.data(), H);
    laps(1);
    for (int64_t b = 0; b < rows; ++b)
      if (is_valid(a.valid, row0 + b))
        for (int64_t u = 0; u < H; ++u) dh[b * H + u] += dh_prev[b * H + u];
    collect_restarts(a.valid, row0, dh.data(), a.d_reset_h, b0, rows, H);
    blk.keep(a.x + row0 * I, I, a.h_prev + row0 * H, H, 2);
    if (blk.filled == blk.steps || t == 0) gru_flush(blk, a);
    laps(2);
  }
  std::copy(dh.begin(), dh.end(), a.d_h0 + b0 * H);
}

}  // namespace rj
