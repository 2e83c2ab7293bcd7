// The LSTM (gates i f g o) over one run's rows b0..b1, all T steps.
// Each step's pre-activations are one product, bias + x_t W_ih + h W_hh,
// into a buffer of the step's rows: the projected inputs of all steps are
// never written. Rows b0..b1 of step t start at (t * B + b0) times the
// row width in every (T, B, ·) array: one contiguous block.

#pragma once

#include <cstdint>
#include <vector>

#include "gemm.h"
#include "profile.h"
#include "steps.h"

namespace rj {

// One run's buffers of a forward call. The residuals the backward reads
// (gates, h_prev, c_prev) are null in an inference call, which then writes
// nothing per step but ys (and h_all/c_all when kept; null when not).
struct LstmForward {
  const float *x, *valid, *bias, *h0, *c0, *reset_h, *reset_c;
  float *ys, *h_last, *c_last, *h_all, *c_all, *gates, *h_prev, *c_prev;
  int64_t T, B, I, H;
};

// W_ih (I, 4H) and W_hh (H, 4H) packed for the forward product, or their
// transposes for the backward's.
struct LstmWeights {
  Panels ih, hh;
};

// The gates of one row from its pre-activations p, and the carry (c, h)
// updated in place when the step is valid (y = h then, else 0).
inline void lstm_cell(const float* p, float* __restrict__ g, float* __restrict__ c,
                      float* __restrict__ h, float* __restrict__ y, float* tc, bool valid,
                      int64_t H) {
  sigmoid_into(p, g, 2 * H);  // i, f
  tanh_into(p + 2 * H, g + 2 * H, H);
  sigmoid_into(p + 3 * H, g + 3 * H, H);
  if (!valid) {
    std::fill(y, y + H, 0.0f);
    return;
  }
  for (int64_t u = 0; u < H; ++u) c[u] = g[H + u] * c[u] + g[u] * g[2 * H + u];
  tanh_into(c, tc, H);
  for (int64_t u = 0; u < H; ++u) y[u] = h[u] = g[3 * H + u] * tc[u];
}

inline void lstm_rows(const LstmForward& a, const LstmWeights& w, int64_t b0, int64_t b1) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H, G = 4 * H, rows = b1 - b0;
  const int64_t ldp = padded(G);
  std::vector<float> h(a.h0 + b0 * H, a.h0 + b1 * H), c(a.c0 + b0 * H, a.c0 + b1 * H);
  std::vector<float> pre(rows * ldp), tc(H), scratch(a.gates ? 0 : G);
  Laps laps(label("lstm forward rows", b0, b1), {"product", "cell"});
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row0 = t * B + b0;
    restart_rows(a.valid, row0, a.reset_h, h.data(), b0, rows, H);
    restart_rows(a.valid, row0, a.reset_c, c.data(), b0, rows, H);
    product({{a.x + row0 * I, I, &w.ih}, {h.data(), H, &w.hh}}, rows, a.bias, pre.data(), ldp);
    laps(0);
    if (a.h_prev) copy_floats(a.h_prev + row0 * H, h.data(), rows * H);
    if (a.c_prev) copy_floats(a.c_prev + row0 * H, c.data(), rows * H);
    for (int64_t b = 0; b < rows; ++b) {
      float* g = a.gates ? a.gates + (row0 + b) * G : scratch.data();
      lstm_cell(pre.data() + b * ldp, g, c.data() + b * H, h.data() + b * H,
                a.ys + (row0 + b) * H, tc.data(), is_valid(a.valid, row0 + b), H);
    }
    if (a.h_all) copy_floats(a.h_all + row0 * H, h.data(), rows * H);
    if (a.c_all) copy_floats(a.c_all + row0 * H, c.data(), rows * H);
    laps(1);
  }
  std::copy(h.begin(), h.end(), a.h_last + b0 * H);
  std::copy(c.begin(), c.end(), a.c_last + b0 * H);
}

// One run's buffers of a backward call. The weight gradients (d_w_ih,
// d_w_hh, d_bias) are added into; the rest is written.
struct LstmBackward {
  const float *x, *valid, *gates, *h_prev, *c_prev, *d_ys, *d_h_last, *d_c_last, *d_h_all,
      *d_c_all;
  float *d_x, *d_h0, *d_c0, *d_reset_h, *d_reset_c, *d_w_ih, *d_w_hh, *d_bias;
  int64_t T, B, I, H;
};

// The cotangent of one valid row's pre-activations (dp, 4H) from its gates,
// c_{t-1} and the cotangents of h_t (dh, with dy added) and c_t (dc, left
// as that of c_{t-1}).
inline void lstm_cell_backward(const float* __restrict__ g, const float* __restrict__ cp,
                               const float* __restrict__ dy, float* __restrict__ dh,
                               float* __restrict__ dc, float* __restrict__ dp, float* cn, float* tc,
                               int64_t H) {
  for (int64_t u = 0; u < H; ++u) cn[u] = g[H + u] * cp[u] + g[u] * g[2 * H + u];
  tanh_into(cn, tc, H);
  for (int64_t u = 0; u < H; ++u) {
    const float i = g[u], f = g[H + u], gg = g[2 * H + u], o = g[3 * H + u];
    const float dhu = dh[u] + dy[u];
    const float dcu = dc[u] + dhu * o * (1.0f - tc[u] * tc[u]);
    dp[u] = dcu * gg * i * (1.0f - i);
    dp[H + u] = dcu * cp[u] * f * (1.0f - f);
    dp[2 * H + u] = dcu * i * (1.0f - gg * gg);
    dp[3 * H + u] = dhu * tc[u] * o * (1.0f - o);
    dc[u] = dcu * f;
  }
}

// Adds the block's weight gradients: dW_ih += xᵀ dp, dW_hh += h_prevᵀ dp,
// d_bias += Σ dp; then empties the block.
inline void lstm_flush(StepBlock& blk, const LstmBackward& a) {
  const int64_t I = a.I, H = a.H, G = 4 * H, P = blk.P();
  weight_product(blk.x.get(), blk.ldx, I, blk.panels_of(0), blk.cap, G, P, a.d_w_ih);
  weight_product(blk.h.get(), blk.ldh, H, blk.panels_of(0), blk.cap, G, P, a.d_w_hh);
  column_sums(blk.panels_of(0), blk.cap, 0, G, P, a.d_bias);
  blk.filled = 0;
}

inline void lstm_rows_backward(const LstmBackward& a, const LstmWeights& wt, int64_t b0,
                               int64_t b1) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H, G = 4 * H, rows = b1 - b0;
  StepBlock blk(rows, I, H, G, 1);
  std::vector<float> dh(a.d_h_last + b0 * H, a.d_h_last + b1 * H);
  std::vector<float> dc(a.d_c_last + b0 * H, a.d_c_last + b1 * H);
  std::vector<float> dh_prev(rows * H), cn(H), tc(H);
  Laps laps(label("lstm backward rows", b0, b1), {"cell", "products", "weights"});
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row0 = t * B + b0;
    add_rows(a.d_h_all, row0, dh.data(), rows, H);  // the carry after step t, used outside
    add_rows(a.d_c_all, row0, dc.data(), rows, H);
    float* dp = blk.step(0);
    for (int64_t b = 0; b < rows; ++b) {
      float* dpb = dp + b * blk.ldd;
      if (!is_valid(a.valid, row0 + b)) {
        std::fill(dpb, dpb + G, 0.0f);
        continue;
      }
      const int64_t r = row0 + b;
      lstm_cell_backward(a.gates + r * G, a.c_prev + r * H, a.d_ys + r * H, dh.data() + b * H,
                         dc.data() + b * H, dpb, cn.data(), tc.data(), H);
    }
    laps(0);
    // dx_t = dp W_ihᵀ; dh_{t-1} = dp W_hhᵀ where the step was valid (the
    // carry's own cotangent passes through padded steps).
    product({{dp, blk.ldd, &wt.ih}}, rows, nullptr, a.d_x + row0 * I, I);
    product({{dp, blk.ldd, &wt.hh}}, rows, nullptr, dh_prev.data(), H);
    laps(1);
    for (int64_t b = 0; b < rows; ++b)
      if (is_valid(a.valid, row0 + b))
        std::copy_n(dh_prev.begin() + b * H, H, dh.begin() + b * H);
    collect_restarts(a.valid, row0, dh.data(), a.d_reset_h, b0, rows, H);
    collect_restarts(a.valid, row0, dc.data(), a.d_reset_c, b0, rows, H);
    blk.keep(a.x + row0 * I, I, a.h_prev + row0 * H, H, 1);
    if (blk.filled == blk.steps || t == 0) lstm_flush(blk, a);
    laps(2);
  }
  std::copy(dh.begin(), dh.end(), a.d_h0 + b0 * H);
  std::copy(dc.begin(), dc.end(), a.d_c0 + b0 * H);
}

}  // namespace rj
