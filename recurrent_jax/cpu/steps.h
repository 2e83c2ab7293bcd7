// What the LSTM and GRU recurrences share: gate maps, restarts of packed
// rows, how a call's rows are split over the cores, and the block of steps
// whose weight gradients the backward sums at once.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "gemm.h"
#include "pool.h"

namespace rj {

// Elementwise maps over contiguous arrays: simple loops that the compiler
// vectorises (with -ffast-math, glibc's vector expf / tanhf).
inline void sigmoid_into(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

inline void tanh_into(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

// valid is 0 on a padded step, 1 on a valid one, 2 on a valid step that
// first restarts the carry.
inline bool is_valid(const float* valid, int64_t row) { return valid[row] > 0.5f; }
inline bool restarts(const float* valid, int64_t row) { return valid[row] > 1.5f; }

// Rows of `carry` (rows x H, starting at batch row b0) that restart at
// step row row0 take their value from `from` (B, H).
inline void restart_rows(const float* valid, int64_t row0, const float* from, float* carry,
                         int64_t b0, int64_t rows, int64_t H) {
  for (int64_t b = 0; b < rows; ++b)
    if (restarts(valid, row0 + b))
      std::copy(from + (b0 + b) * H, from + (b0 + b + 1) * H, carry + b * H);
}

// Moves the cotangent of restarting rows' carries (rows x H) into `to`
// (B, H): nothing of it reaches the steps before.
inline void collect_restarts(const float* valid, int64_t row0, float* carry, float* to, int64_t b0,
                             int64_t rows, int64_t H) {
  for (int64_t b = 0; b < rows; ++b) {
    if (!restarts(valid, row0 + b)) continue;
    for (int64_t u = 0; u < H; ++u) to[(b0 + b) * H + u] += carry[b * H + u];
    std::fill(carry + b * H, carry + (b + 1) * H, 0.0f);
  }
}

// dst[0, n) = src[0, n); nothing when n is 0 (either may then be null).
inline void copy_floats(float* dst, const float* src, int64_t n) {
  if (n > 0) std::copy(src, src + n, dst);
}

// carry (rows x H) += rows row0.. of `from` (T, B, H); nothing when null.
inline void add_rows(const float* from, int64_t row0, float* carry, int64_t rows, int64_t H) {
  if (!from) return;
  const float* f = from + row0 * H;
  for (int64_t i = 0; i < rows * H; ++i) carry[i] += f[i];
}

// --- the work of a call over the cores ------------------------------------------
// One run's batch rows never interact in a recurrence, so a slice of rows
// runs through all T steps without synchronising. Several runs (vmap) take
// a core each; one run's rows are split in slices of whole 8-row blocks (the
// GEMM's register block). A call of fewer than kThreadFlops flops
// stays on the caller's thread: a wake-up would cost more than it saves.
constexpr double kThreadFlops = 2e6;

struct Split {
  int64_t runs = 1, slices = 1;
  bool parallel = false;

  int64_t tasks() const { return runs * slices; }

  // Rows [b0, b1) of slice s of B rows.
  void rows(int64_t B, int64_t s, int64_t& b0, int64_t& b1) const {
    const int64_t chunk = ((B + slices - 1) / slices + kRows - 1) / kRows * kRows;
    b0 = std::min(B, s * chunk);
    b1 = slices == 1 ? B : std::min(B, b0 + chunk);
  }
};

inline Split split(int64_t runs, int64_t B, double flops_per_run) {
  const int64_t cores = Pool::instance().threads();
  Split out;
  out.runs = runs;
  out.parallel = flops_per_run * runs >= kThreadFlops && cores > 1;
  if (runs == 1 && out.parallel) out.slices = std::min(cores, std::max<int64_t>(1, B / kRows));
  out.parallel = out.parallel && out.tasks() > 1;
  return out;
}

// Runs fn(n, b0, b1, s) for every run n and row slice s of `plan`.
template <class F>
void over_rows(const Split& plan, int64_t B, F fn) {
  parallel_for(plan.tasks(), plan.parallel, [&](int64_t task) {
    int64_t b0, b1;
    const int64_t n = task / plan.slices, s = task % plan.slices;
    plan.rows(B, s, b0, b1);
    fn(n, b0, b1, s);
  });
}

// As over_rows, with pack(n), the weights of run n as the body reads them,
// built once per run: body(weights, n, b0, b1, s).
template <class Pack, class Body>
void over_rows_packed(const Split& plan, int64_t B, Pack pack, Body body) {
  if (plan.runs == 1) {
    const auto weights = pack(0);
    return over_rows(plan, B, [&](int64_t n, int64_t b0, int64_t b1, int64_t s) {
      body(weights, n, b0, b1, s);
    });
  }
  over_rows(plan, B, [&](int64_t n, int64_t b0, int64_t b1, int64_t s) {
    body(pack(n), n, b0, b1, s);  // one slice a run
  });
}

// Weight-gradient sums of a backward call: slice 0 (and every run) adds into
// the outputs, every further slice into its own zeroed copy, added to the
// outputs once all slices are done.
class Partials {
 public:
  Partials(const Split& plan, int64_t size) : size_(size), data_((plan.slices - 1) * size, 0.0f) {}

  // Where slice s adds: `outputs` (zeroed) for s == 0, else its copy.
  float* of(int64_t s, float* outputs) { return s == 0 ? outputs : data_.data() + (s - 1) * size_; }

  void add_into(float* outputs) const {
    for (size_t i = 0; i < data_.size(); ++i) outputs[i % size_] += data_[i];
  }

 private:
  int64_t size_;
  std::vector<float> data_;
};

// The rows of a block of steps in the backward: their inputs, carries and
// pre-activation cotangents, so that the weight gradients are one product
// over P = steps x rows at a time (K = P) instead of T products of K = rows.
// kBlockRows rows keep a block's cotangents (kBlockRows x 4H) in L2. A step's
// cotangents are written row-major (step(c), read by the products for dx
// and dh), then kept in panels (keep).
constexpr int64_t kBlockRows = 128;

struct StepBlock {
  StepBlock(int64_t rows, int64_t I, int64_t H, int64_t G, int64_t cotangents)
      : rows(rows), steps(std::max<int64_t>(1, kBlockRows / std::max<int64_t>(rows, 1))),
        cap(steps * rows), ldx(staggered(I)), ldh(staggered(H)), ldd(padded(G)),
        x(new float[cap * ldx]), h(new float[cap * ldh]),
        step_d(cotangents * rows * ldd, 0.0f), panels(new float[cotangents * cap * ldd]) {}

  int64_t rows, steps, cap, ldx, ldh, ldd;
  int64_t filled = 0;  // steps in the block so far
  // (cap, ·) of row strides ldx, ldh; the step's cotangents (rows, ldd) and
  // the block's in panels (ldd / kPanel panels of (cap, kPanel)), per
  // cotangent. Only step_d starts zeroed: the rest is read only where kept.
  std::unique_ptr<float[]> x, h;
  std::vector<float> step_d;
  std::unique_ptr<float[]> panels;

  // The step's cotangent c, row-major (rows, ldd); columns past G stay zero.
  float* step(int64_t c) { return step_d.data() + c * rows * ldd; }
  const float* panels_of(int64_t c) const { return panels.get() + c * cap * ldd; }
  int64_t P() const { return filled * rows; }

  // Keeps the step's inputs (rows x I), carries entering it (rows x H) and
  // cotangents, and counts the step in.
  void keep(const float* xs, int64_t I, const float* hs, int64_t H, int64_t cotangents) {
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t p = filled * rows + b;
      copy_floats(x.get() + p * ldx, xs + b * I, I);
      copy_floats(h.get() + p * ldh, hs + b * H, H);
      for (int64_t c = 0; c < cotangents; ++c)
        for (int64_t j = 0; j < ldd; j += kPanel)
          copy_floats(panels.get() + c * cap * ldd + (j * cap + p * kPanel),
                      step(c) + b * ldd + j, kPanel);
    }
    ++filled;
  }

 private:
  // A row stride of whole cache lines plus one: the weight products read one
  // column strip down P rows, and strides of a power of two put every row
  // in the same few L1 sets.
  static int64_t staggered(int64_t n) { return (n + 15) / 16 * 16 + 16; }
};

}  // namespace rj
