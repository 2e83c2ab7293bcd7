// The CPU backend's recurrences: plain LSTM and GRU (reset after), forward
// and backward, as XLA FFI custom calls. One call runs all T steps; each step
// is one small GEMM (h_{t-1} W_hh, or dpre W_hh^T backwards) and one pass of
// gate math over the batch, with no per-step dispatch. The input projection
// of all T * B rows is one more call (Project); the weight gradients stay in
// XLA as single large GEMMs.
//
// Layouts (row-major, time-major): xp (T, B, G) projected inputs with their
// biases, valid (T, B), w (K, G) = W_hh, h0/c0 (B, H), reset_h/reset_c
// (B, H). G = 4H (LSTM, gates i f g o) or 3H (GRU, r z n). valid is 0 on a
// padded step, which keeps the carry and outputs zeros (the engine's
// _step.finish), 1 on a valid step and 2 on a valid step that first
// restarts the carry from reset_h/reset_c (packed rows: _step.restart);
// the backward then sends the carry's cotangent there (d_reset_h/c).
// h_all/c_all, the carry after every step, are (T, B, H) when kept (a
// packed row's sequences end inside it) or (0, B, H); their cotangents
// d_h_all/d_c_all likewise.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Elementwise maps over contiguous arrays: simple loops that the compiler
// vectorises (with -ffast-math, glibc's vector expf / tanhf).
void sigmoid_into(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void tanh_into(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

// The GEMM: out (M, N) += a (M, K) @ B (K, N), a and out row-major, B
// packed once per call into panels of kPanel columns, each panel's K rows
// contiguous (the last panel zero-padded), so the inner loop streams one
// panel in order instead of striding a row of N floats per k. Blocks of
// kRows x kPanel outputs stay in registers while k runs (measured on the
// 2-core AVX-512 machine: 160-180 GFLOP/s a core at 32 x 128..256 x
// 512..1024, against 110-145 for the unpacked row-major B, and 2x at
// 32 x 512 x 2048).
constexpr int64_t kRows = 8, kPanel = 32;

struct Panels {
  std::vector<float> data;  // (ceil(N / kPanel), K, kPanel)
  int64_t k, n;
};

// B = w (K, N) row-major, or with `transposed` B = wᵀ for w (N, K).
Panels pack_panels(const float* w, int64_t k, int64_t n, bool transposed) {
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

// R rows of a (stride k) times one panel, into R rows of out (stride ldo)
// in its first `width` columns: added to them, or with `bias` (width
// values) stored as bias + product, out never read.
template <int64_t R>
void panel_block(const float* __restrict__ a, int64_t k, const float* __restrict__ panel,
                 float* __restrict__ out, int64_t ldo, int64_t width, const float* bias) {
  float acc[R][kPanel] = {};
  if (bias)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < width; ++c) acc[r][c] = bias[c];
  for (int64_t p = 0; p < k; ++p) {
    const float* brow = panel + p * kPanel;
    for (int64_t r = 0; r < R; ++r) {
      const float av = a[r * k + p];
      for (int64_t c = 0; c < kPanel; ++c) acc[r][c] += av * brow[c];
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    if (bias) {
      std::copy(acc[r], acc[r] + width, out + r * ldo);
    } else {
      for (int64_t c = 0; c < width; ++c) out[r * ldo + c] += acc[r][c];
    }
  }
}

template <int64_t R>
void edge_block(int64_t rows, const float* a, int64_t k, const float* panel, float* out,
                int64_t ldo, int64_t width, const float* bias) {
  if constexpr (R > 0) {
    if (rows == R) return panel_block<R>(a, k, panel, out, ldo, width, bias);
    edge_block<R - 1>(rows, a, k, panel, out, ldo, width, bias);
  }
}

// out (M, N) += a @ B; or, given `bias` (N), out = a @ B + bias.
void gemm_acc(const float* __restrict__ a, const Panels& b, float* __restrict__ out, int64_t m,
              const float* bias = nullptr) {
  const int64_t k = b.k, n = b.n;
  for (int64_t j = 0; j < n; j += kPanel) {
    const float* panel = b.data.data() + j * k;
    const float* panel_bias = bias ? bias + j : nullptr;
    const int64_t width = std::min(kPanel, n - j);
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows)
      panel_block<kRows>(a + i * k, k, panel, out + i * n + j, n, width, panel_bias);
    edge_block<kRows - 1>(m - i, a + i * k, k, panel, out + i * n + j, n, width, panel_bias);
  }
}

// Runs fn(b0, b1) over slices of the batch rows [0, B) on up to one thread
// per core: rows never interact in a recurrence, so each thread runs its
// rows through all T steps without synchronising. Slices are multiples of
// 8 rows (the GEMM's register block). A call of fewer than kThreadFlops
// multiply-adds stays on one thread: starting threads then cost more than
// they save (measured at (16, 64, 64, 64) on 2 cores).
constexpr double kThreadFlops = 1e8;

template <class F>
void over_rows(int64_t B, double flops, F fn) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t n = flops < kThreadFlops ? 1 : std::min(cores, std::max<int64_t>(1, B / 8));
  if (n <= 1) return fn(int64_t{0}, B);
  const int64_t chunk = ((B + n - 1) / n + 7) / 8 * 8;
  std::vector<std::thread> pool;
  for (int64_t b0 = chunk; b0 < B; b0 += chunk) pool.emplace_back(fn, b0, std::min(B, b0 + chunk));
  fn(int64_t{0}, std::min(B, chunk));
  for (auto& thread : pool) thread.join();
}

// --- buffers -----------------------------------------------------------------
// Every handler checks the dtype, rank and every dimension of every buffer
// it reads or writes before touching any of them, and returns an
// InvalidArgument error naming the buffer otherwise: the sizes come from
// the Python side, which is never trusted with memory safety.
//
// Under jax.vmap (vmap_method="broadcast_all") every operand gains the same
// leading run axes; run n's slice of a buffer is its n-th of `runs` parts.

using Dimensions = ffi::AnyBuffer::Dimensions;

std::string dtype_name(ffi::DataType dtype) {
  switch (dtype) {
    case ffi::DataType::F32:
      return "f32";
    case ffi::DataType::F64:
      return "f64";
    case ffi::DataType::F16:
      return "f16";
    case ffi::DataType::BF16:
      return "bf16";
    case ffi::DataType::S32:
      return "s32";
    case ffi::DataType::S64:
      return "s64";
    case ffi::DataType::PRED:
      return "pred";
    default:
      return "dtype #" + std::to_string(static_cast<int>(dtype));
  }
}

std::string shape_string(Dimensions dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

// One buffer and the shape it must have after the run axes.
struct Operand {
  const char* name;
  const ffi::AnyBuffer& buffer;
  std::vector<int64_t> trailing;
};

// The run axes shared by every operand and the sizes of one call.
struct Sizes {
  std::vector<int64_t> run_dims;
  int64_t runs = 1, T = 0, B = 0, H = 0;
};

// Reads the sizes of a call into `s` from `lead`, its last three axes
// (T, B, gates * H); an error naming it when it is not f32 of rank >= 3
// with a gate axis divisible by `gates`.
ffi::Error sizes_of(const char* call, const char* name, const ffi::AnyBuffer& lead, int64_t gates,
                    const char* layout, Sizes& s) {
  const Dimensions d = lead.dimensions();
  const bool ok =
      lead.element_type() == ffi::DataType::F32 && d.size() >= 3 && d[d.size() - 1] % gates == 0;
  if (!ok) {
    return ffi::Error::InvalidArgument(std::string(call) + ": " + name + ": expected f32 " +
                                       layout + " with the last axis a " + "multiple of " +
                                       std::to_string(gates) + ", got " +
                                       dtype_name(lead.element_type()) + shape_string(d));
  }
  s.run_dims.assign(d.begin(), d.end() - 3);
  for (int64_t r : s.run_dims) s.runs *= r;
  s.T = d[d.size() - 3];
  s.B = d[d.size() - 2];
  s.H = d[d.size() - 1] / gates;
  return ffi::Error::Success();
}

// Success, or an InvalidArgument error naming the first operand that is not
// f32 of shape (*run_dims, *trailing).
ffi::Error check(const char* call, const Sizes& s, std::initializer_list<Operand> operands) {
  for (const Operand& op : operands) {
    std::vector<int64_t> want(s.run_dims);
    want.insert(want.end(), op.trailing.begin(), op.trailing.end());
    const Dimensions got = op.buffer.dimensions();
    const bool same_shape = std::equal(got.begin(), got.end(), want.begin(), want.end());
    if (op.buffer.element_type() != ffi::DataType::F32 || !same_shape) {
      return ffi::Error::InvalidArgument(std::string(call) + ": " + op.name + ": expected f32" +
                                         shape_string(Dimensions(want.data(), want.size())) +
                                         ", got " + dtype_name(op.buffer.element_type()) +
                                         shape_string(got));
    }
  }
  return ffi::Error::Success();
}

// Run n's part of a checked buffer.
inline float* at(const ffi::AnyBuffer& buffer, int64_t n, int64_t runs) {
  return static_cast<float*>(buffer.untyped_data()) +
         n * (static_cast<int64_t>(buffer.element_count()) / runs);
}

// Runs fn(n, b0, b1) for every run n and row slice: runs spread over the
// cores (each run on one thread) when there are several, else the rows of
// the one run (over_rows).
template <class F>
void over_runs(int64_t runs, int64_t B, double flops, F fn) {
  if (runs == 1) {
    return over_rows(B, flops, [&](int64_t b0, int64_t b1) { fn(int64_t{0}, b0, b1); });
  }
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t n = flops * runs < kThreadFlops ? 1 : std::min(cores, runs);
  auto worker = [&](int64_t first) {
    for (int64_t r = first; r < runs; r += n) fn(r, int64_t{0}, B);
  };
  std::vector<std::thread> pool;
  for (int64_t first = 1; first < n; ++first) pool.emplace_back(worker, first);
  worker(0);
  for (auto& thread : pool) thread.join();
}

// Steps of a per-step carry buffer: T when kept, 0 when not; an error
// then names the buffer with T expected.
int64_t kept_steps(const ffi::AnyBuffer& buffer, int64_t T) {
  const Dimensions d = buffer.dimensions();
  return d.size() >= 3 && d[d.size() - 3] == 0 ? 0 : T;
}

// Run n's part of a per-step carry buffer, or null when it is not kept.
inline float* kept_at(const ffi::AnyBuffer& buffer, int64_t n, int64_t runs) {
  return buffer.element_count() ? at(buffer, n, runs) : nullptr;
}

void zero(const ffi::AnyBuffer& buffer) {
  std::memset(buffer.untyped_data(), 0, buffer.element_count() * sizeof(float));
}

// --- LSTM -------------------------------------------------------------------
// Inside each fn(b0, b1) below, rows b0..b1 of step t start at (t * B + b0)
// times the row width in every (T, B, ·) array: one contiguous block.

inline bool restarts(const float* valid, int64_t row) { return valid[row] > 1.5f; }

// Rows of `carry` (rows x H, starting at batch row b0) that restart at
// step row0 take their value from `from` (B, H).
void restart_rows(const float* valid, int64_t row0, const float* from, float* carry, int64_t b0,
                  int64_t rows, int64_t H) {
  for (int64_t b = 0; b < rows; ++b)
    if (restarts(valid, row0 + b))
      std::copy(from + (b0 + b) * H, from + (b0 + b + 1) * H, carry + b * H);
}

// Moves the cotangent of restarting rows' carries (rows x H) into `to`
// (B, H): nothing of it reaches the steps before.
void collect_restarts(const float* valid, int64_t row0, float* carry, float* to, int64_t b0,
                      int64_t rows, int64_t H) {
  for (int64_t b = 0; b < rows; ++b) {
    if (!restarts(valid, row0 + b)) continue;
    for (int64_t u = 0; u < H; ++u) to[(b0 + b) * H + u] += carry[b * H + u];
    std::fill(carry + b * H, carry + (b + 1) * H, 0.0f);
  }
}

// carry (rows x H) += rows row0.. of `from` (T, B, H); nothing when null.
void add_rows(const float* from, int64_t row0, float* carry, int64_t rows, int64_t H) {
  if (!from) return;
  const float* f = from + row0 * H;
  for (int64_t i = 0; i < rows * H; ++i) carry[i] += f[i];
}

// One run's rows b0..b1 through all T steps. The residuals the backward
// reads (gates, h_prev, c_prev) are null in an inference call, which then
// keeps only the current step's gates and writes nothing else per step.
void lstm_rows(const float* xp, const float* valid, const float* w, const float* h0,
               const float* c0, const float* reset_h, const float* reset_c, float* ys,
               float* h_last, float* c_last, float* h_all, float* c_all, float* gates,
               float* h_prev, float* c_prev, int64_t T, int64_t B, int64_t H, int64_t b0,
               int64_t b1) {
  const int64_t G = 4 * H, rows = b1 - b0;
  const Panels w_hh = pack_panels(w, H, G, false);
  std::vector<float> h(h0 + b0 * H, h0 + b1 * H), c(c0 + b0 * H, c0 + b1 * H);
  std::vector<float> pre(rows * G), tc(H), scratch(gates ? 0 : rows * G);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row0 = t * B + b0;
    restart_rows(valid, row0, reset_h, h.data(), b0, rows, H);
    restart_rows(valid, row0, reset_c, c.data(), b0, rows, H);
    std::memcpy(pre.data(), xp + row0 * G, rows * G * sizeof(float));
    gemm_acc(h.data(), w_hh, pre.data(), rows);
    if (h_prev) std::memcpy(h_prev + row0 * H, h.data(), rows * H * sizeof(float));
    if (c_prev) std::memcpy(c_prev + row0 * H, c.data(), rows * H * sizeof(float));
    float* step_gates = gates ? gates + row0 * G : scratch.data();
    for (int64_t b = 0; b < rows; ++b) {
      float* __restrict__ g = step_gates + b * G;
      float* __restrict__ y = ys + (row0 + b) * H;
      const float* p = pre.data() + b * G;
      sigmoid_into(p, g, 2 * H);  // i, f
      tanh_into(p + 2 * H, g + 2 * H, H);
      sigmoid_into(p + 3 * H, g + 3 * H, H);
      if (valid[row0 + b] > 0.5f) {
        float* __restrict__ cb = c.data() + b * H;
        float* __restrict__ hb = h.data() + b * H;
        for (int64_t u = 0; u < H; ++u) cb[u] = g[H + u] * cb[u] + g[u] * g[2 * H + u];
        tanh_into(cb, tc.data(), H);
        for (int64_t u = 0; u < H; ++u) y[u] = hb[u] = g[3 * H + u] * tc[u];
      } else {
        std::fill(y, y + H, 0.0f);
      }
    }
    if (h_all) std::memcpy(h_all + row0 * H, h.data(), rows * H * sizeof(float));
    if (c_all) std::memcpy(c_all + row0 * H, c.data(), rows * H * sizeof(float));
  }
  std::copy(h.begin(), h.end(), h_last + b0 * H);
  std::copy(c.begin(), c.end(), c_last + b0 * H);
}

// One run's rows b0..b1 backwards through all T steps: the cotangents of
// the pre-activations (d_pre) and of the initial carry.
void lstm_rows_backward(const float* valid, const float* w, const float* gates, const float* c_prev,
                        const float* d_ys, const float* d_h_last, const float* d_c_last,
                        const float* d_h_all, const float* d_c_all, float* d_pre, float* d_h0,
                        float* d_c0, float* d_reset_h, float* d_reset_c, int64_t T, int64_t B,
                        int64_t H, int64_t b0, int64_t b1) {
  const int64_t G = 4 * H;
  const Panels w_t = pack_panels(w, G, H, true);  // W_hhᵀ (G, H)
  const int64_t rows = b1 - b0;
  std::vector<float> dh(d_h_last + b0 * H, d_h_last + b1 * H);
  std::vector<float> dc(d_c_last + b0 * H, d_c_last + b1 * H);
  std::vector<float> dh_next(rows * H), cn(H), tc(H);
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row0 = t * B + b0;
    add_rows(d_h_all, row0, dh.data(), rows, H);  // the carry after step t, used outside
    add_rows(d_c_all, row0, dc.data(), rows, H);
    float* dp = d_pre + row0 * G;
    for (int64_t b = 0; b < rows; ++b) {
      float* __restrict__ dpb = dp + b * G;
      if (!(valid[row0 + b] > 0.5f)) {
        std::fill(dpb, dpb + G, 0.0f);
        continue;
      }
      const float* __restrict__ g = gates + (row0 + b) * G;
      const float* __restrict__ cp = c_prev + (row0 + b) * H;
      const float* __restrict__ dy = d_ys + (row0 + b) * H;
      float* __restrict__ dhb = dh.data() + b * H;
      float* __restrict__ dcb = dc.data() + b * H;
      for (int64_t u = 0; u < H; ++u) cn[u] = g[H + u] * cp[u] + g[u] * g[2 * H + u];
      tanh_into(cn.data(), tc.data(), H);
      for (int64_t u = 0; u < H; ++u) {
        const float i = g[u], f = g[H + u], gg = g[2 * H + u], o = g[3 * H + u];
        const float dhu = dhb[u] + dy[u];
        const float dcu = dcb[u] + dhu * o * (1.0f - tc[u] * tc[u]);
        dpb[u] = dcu * gg * i * (1.0f - i);
        dpb[H + u] = dcu * cp[u] * f * (1.0f - f);
        dpb[2 * H + u] = dcu * i * (1.0f - gg * gg);
        dpb[3 * H + u] = dhu * tc[u] * o * (1.0f - o);
        dcb[u] = dcu * f;
      }
    }
    // dh_{t-1} = dpre W_hh^T where the step was valid; the carry's own
    // cotangent passes through padded steps.
    std::fill(dh_next.begin(), dh_next.end(), 0.0f);
    gemm_acc(dp, w_t, dh_next.data(), rows);
    for (int64_t b = 0; b < rows; ++b)
      if (valid[row0 + b] > 0.5f)
        std::copy(dh_next.begin() + b * H, dh_next.begin() + (b + 1) * H, dh.begin() + b * H);
    collect_restarts(valid, row0, dh.data(), d_reset_h, b0, rows, H);
    collect_restarts(valid, row0, dc.data(), d_reset_c, b0, rows, H);
  }
  std::copy(dh.begin(), dh.end(), d_h0 + b0 * H);
  std::copy(dc.begin(), dc.end(), d_c0 + b0 * H);
}

using Arg = ffi::AnyBuffer;
using Ret = ffi::Result<ffi::AnyBuffer>;

// Returns from the handler when `expr` (an ffi::Error) failed.
#define RJ_CHECK(expr)                       \
  do {                                       \
    ffi::Error rj_error = (expr);            \
    if (rj_error.failure()) return rj_error; \
  } while (0)

ffi::Error LstmForward(Arg xp, Arg valid, Arg w, Arg h0, Arg c0, Arg reset_h, Arg reset_c, Ret ys,
                       Ret h_last, Ret c_last, Ret h_all, Ret c_all, Ret gates, Ret h_prev,
                       Ret c_prev) {
  constexpr const char* call = "recurrent_jax_lstm_forward";
  Sizes s;
  RJ_CHECK(sizes_of(call, "xp", xp, 4, "(..., T, B, 4H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 4 * H, K = kept_steps(*h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"h0", h0, {B, H}},
                  {"c0", c0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"reset_c", reset_c, {B, H}},
                  {"ys", *ys, {T, B, H}},
                  {"h_last", *h_last, {B, H}},
                  {"c_last", *c_last, {B, H}},
                  {"h_all", *h_all, {K, B, H}},
                  {"c_all", *c_all, {K, B, H}},
                  {"gates", *gates, {T, B, G}},
                  {"h_prev", *h_prev, {T, B, H}},
                  {"c_prev", *c_prev, {T, B, H}}}));
  over_runs(N, B, 2.0 * T * B * G * H, [&](int64_t n, int64_t b0, int64_t b1) {
    lstm_rows(at(xp, n, N), at(valid, n, N), at(w, n, N), at(h0, n, N), at(c0, n, N),
              at(reset_h, n, N), at(reset_c, n, N), at(*ys, n, N), at(*h_last, n, N),
              at(*c_last, n, N), kept_at(*h_all, n, N), kept_at(*c_all, n, N), at(*gates, n, N),
              at(*h_prev, n, N), at(*c_prev, n, N), T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

ffi::Error LstmInfer(Arg xp, Arg valid, Arg w, Arg h0, Arg c0, Arg reset_h, Arg reset_c, Ret ys,
                     Ret h_last, Ret c_last, Ret h_all, Ret c_all) {
  constexpr const char* call = "recurrent_jax_lstm_infer";
  Sizes s;
  RJ_CHECK(sizes_of(call, "xp", xp, 4, "(..., T, B, 4H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 4 * H, K = kept_steps(*h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"h0", h0, {B, H}},
                  {"c0", c0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"reset_c", reset_c, {B, H}},
                  {"ys", *ys, {T, B, H}},
                  {"h_last", *h_last, {B, H}},
                  {"c_last", *c_last, {B, H}},
                  {"h_all", *h_all, {K, B, H}},
                  {"c_all", *c_all, {K, B, H}}}));
  over_runs(N, B, 2.0 * T * B * G * H, [&](int64_t n, int64_t b0, int64_t b1) {
    lstm_rows(at(xp, n, N), at(valid, n, N), at(w, n, N), at(h0, n, N), at(c0, n, N),
              at(reset_h, n, N), at(reset_c, n, N), at(*ys, n, N), at(*h_last, n, N),
              at(*c_last, n, N), kept_at(*h_all, n, N), kept_at(*c_all, n, N), nullptr, nullptr,
              nullptr, T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

ffi::Error LstmBackward(Arg valid, Arg w, Arg gates, Arg c_prev, Arg d_ys, Arg d_h_last,
                        Arg d_c_last, Arg d_h_all, Arg d_c_all, Ret d_pre, Ret d_h0, Ret d_c0,
                        Ret d_reset_h, Ret d_reset_c) {
  constexpr const char* call = "recurrent_jax_lstm_backward";
  Sizes s;
  RJ_CHECK(sizes_of(call, "gates", gates, 4, "(..., T, B, 4H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 4 * H, K = kept_steps(d_h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"c_prev", c_prev, {T, B, H}},
                  {"d_ys", d_ys, {T, B, H}},
                  {"d_h_last", d_h_last, {B, H}},
                  {"d_c_last", d_c_last, {B, H}},
                  {"d_h_all", d_h_all, {K, B, H}},
                  {"d_c_all", d_c_all, {K, B, H}},
                  {"d_pre", *d_pre, {T, B, G}},
                  {"d_h0", *d_h0, {B, H}},
                  {"d_c0", *d_c0, {B, H}},
                  {"d_reset_h", *d_reset_h, {B, H}},
                  {"d_reset_c", *d_reset_c, {B, H}}}));
  zero(*d_reset_h);  // accumulated into by each thread's own rows
  zero(*d_reset_c);
  over_runs(N, B, 2.0 * T * B * H * G, [&](int64_t n, int64_t b0, int64_t b1) {
    lstm_rows_backward(at(valid, n, N), at(w, n, N), at(gates, n, N), at(c_prev, n, N),
                       at(d_ys, n, N), at(d_h_last, n, N), at(d_c_last, n, N),
                       kept_at(d_h_all, n, N), kept_at(d_c_all, n, N), at(*d_pre, n, N),
                       at(*d_h0, n, N), at(*d_c0, n, N), at(*d_reset_h, n, N), at(*d_reset_c, n, N),
                       T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

// --- GRU (reset after: n = tanh(x_n + r * (h W_n + b_hn))) -------------------

// One run's rows b0..b1 through all T steps; the residuals (gates, hn,
// h_prev) are null in an inference call, as in lstm_rows.
void gru_rows(const float* xp, const float* valid, const float* w, const float* bn, const float* h0,
              const float* reset_h, float* ys, float* h_last, float* h_all, float* gates, float* hn,
              float* h_prev, int64_t T, int64_t B, int64_t H, int64_t b0, int64_t b1) {
  const int64_t G = 3 * H, rows = b1 - b0;
  const Panels w_hh = pack_panels(w, H, G, false);
  std::vector<float> h(h0 + b0 * H, h0 + b1 * H);
  std::vector<float> hh(rows * G), sum(2 * H), scratch(gates ? 0 : G), hn_scratch(hn ? 0 : H);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row0 = t * B + b0;
    restart_rows(valid, row0, reset_h, h.data(), b0, rows, H);
    std::fill(hh.begin(), hh.end(), 0.0f);
    gemm_acc(h.data(), w_hh, hh.data(), rows);
    if (h_prev) std::memcpy(h_prev + row0 * H, h.data(), rows * H * sizeof(float));
    for (int64_t b = 0; b < rows; ++b) {
      const float* __restrict__ x = xp + (row0 + b) * G;
      const float* __restrict__ q = hh.data() + b * G;
      float* __restrict__ g = gates ? gates + (row0 + b) * G : scratch.data();
      float* __restrict__ hnb = hn ? hn + (row0 + b) * H : hn_scratch.data();
      float* __restrict__ y = ys + (row0 + b) * H;
      for (int64_t u = 0; u < 2 * H; ++u) sum[u] = x[u] + q[u];
      sigmoid_into(sum.data(), g, 2 * H);  // r, z
      for (int64_t u = 0; u < H; ++u) {
        hnb[u] = q[2 * H + u] + bn[u];
        sum[u] = x[2 * H + u] + g[u] * hnb[u];
      }
      tanh_into(sum.data(), g + 2 * H, H);
      if (valid[row0 + b] > 0.5f) {
        float* __restrict__ hb = h.data() + b * H;
        for (int64_t u = 0; u < H; ++u) {
          const float z = g[H + u], n = g[2 * H + u];
          y[u] = hb[u] = (1.0f - z) * n + z * hb[u];
        }
      } else {
        std::fill(y, y + H, 0.0f);
      }
    }
    if (h_all) std::memcpy(h_all + row0 * H, h.data(), rows * H * sizeof(float));
  }
  std::copy(h.begin(), h.end(), h_last + b0 * H);
}

// One run's rows b0..b1 backwards through all T steps: the cotangents of
// the projected inputs (d_xp), of h W_hh + b_hh (d_hh) and of the initial
// carry.
void gru_rows_backward(const float* valid, const float* w, const float* gates, const float* hn,
                       const float* h_prev, const float* d_ys, const float* d_h_last,
                       const float* d_h_all, float* d_xp, float* d_hh, float* d_h0,
                       float* d_reset_h, int64_t T, int64_t B, int64_t H, int64_t b0, int64_t b1) {
  const int64_t G = 3 * H;
  const Panels w_t = pack_panels(w, G, H, true);  // W_hhᵀ (G, H)
  const int64_t rows = b1 - b0;
  std::vector<float> dh(d_h_last + b0 * H, d_h_last + b1 * H);
  std::vector<float> dh_next(rows * H);
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row0 = t * B + b0;
    add_rows(d_h_all, row0, dh.data(), rows, H);  // the carry after step t, used outside
    float* dx = d_xp + row0 * G;
    float* dq = d_hh + row0 * G;
    for (int64_t b = 0; b < rows; ++b) {
      float* __restrict__ dxb = dx + b * G, * __restrict__ dqb = dq + b * G;
      if (!(valid[row0 + b] > 0.5f)) {
        std::fill(dxb, dxb + G, 0.0f);
        std::fill(dqb, dqb + G, 0.0f);
        continue;
      }
      const float* __restrict__ g = gates + (row0 + b) * G;
      const float* __restrict__ hnb = hn + (row0 + b) * H;
      const float* __restrict__ hp = h_prev + (row0 + b) * H;
      const float* __restrict__ dy = d_ys + (row0 + b) * H;
      float* __restrict__ dhb = dh.data() + b * H;
      for (int64_t u = 0; u < H; ++u) {
        const float r = g[u], z = g[H + u], n = g[2 * H + u];
        const float dhu = dhb[u] + dy[u];
        const float dn = dhu * (1.0f - z) * (1.0f - n * n);
        const float dz = dhu * (hp[u] - n) * z * (1.0f - z);
        const float dr = dn * hnb[u] * r * (1.0f - r);
        dxb[u] = dqb[u] = dr;
        dxb[H + u] = dqb[H + u] = dz;
        dxb[2 * H + u] = dn;
        dqb[2 * H + u] = dn * r;
        dhb[u] = dhu * z;  // the direct path; W_hh's is added below
      }
    }
    std::fill(dh_next.begin(), dh_next.end(), 0.0f);
    gemm_acc(dq, w_t, dh_next.data(), rows);
    for (int64_t b = 0; b < rows; ++b)
      if (valid[row0 + b] > 0.5f)
        for (int64_t u = 0; u < H; ++u) dh[b * H + u] += dh_next[b * H + u];
    collect_restarts(valid, row0, dh.data(), d_reset_h, b0, rows, H);
  }
  std::copy(dh.begin(), dh.end(), d_h0 + b0 * H);
}

ffi::Error GruForward(Arg xp, Arg valid, Arg w, Arg b_hn, Arg h0, Arg reset_h, Ret ys, Ret h_last,
                      Ret h_all, Ret gates, Ret hn, Ret h_prev) {
  constexpr const char* call = "recurrent_jax_gru_forward";
  Sizes s;
  RJ_CHECK(sizes_of(call, "xp", xp, 3, "(..., T, B, 3H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 3 * H, K = kept_steps(*h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"b_hn", b_hn, {H}},
                  {"h0", h0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"ys", *ys, {T, B, H}},
                  {"h_last", *h_last, {B, H}},
                  {"h_all", *h_all, {K, B, H}},
                  {"gates", *gates, {T, B, G}},
                  {"hn", *hn, {T, B, H}},
                  {"h_prev", *h_prev, {T, B, H}}}));
  over_runs(N, B, 2.0 * T * B * G * H, [&](int64_t n, int64_t b0, int64_t b1) {
    gru_rows(at(xp, n, N), at(valid, n, N), at(w, n, N), at(b_hn, n, N), at(h0, n, N),
             at(reset_h, n, N), at(*ys, n, N), at(*h_last, n, N), kept_at(*h_all, n, N),
             at(*gates, n, N), at(*hn, n, N), at(*h_prev, n, N), T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

ffi::Error GruInfer(Arg xp, Arg valid, Arg w, Arg b_hn, Arg h0, Arg reset_h, Ret ys, Ret h_last,
                    Ret h_all) {
  constexpr const char* call = "recurrent_jax_gru_infer";
  Sizes s;
  RJ_CHECK(sizes_of(call, "xp", xp, 3, "(..., T, B, 3H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 3 * H, K = kept_steps(*h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"b_hn", b_hn, {H}},
                  {"h0", h0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"ys", *ys, {T, B, H}},
                  {"h_last", *h_last, {B, H}},
                  {"h_all", *h_all, {K, B, H}}}));
  over_runs(N, B, 2.0 * T * B * G * H, [&](int64_t n, int64_t b0, int64_t b1) {
    gru_rows(at(xp, n, N), at(valid, n, N), at(w, n, N), at(b_hn, n, N), at(h0, n, N),
             at(reset_h, n, N), at(*ys, n, N), at(*h_last, n, N), kept_at(*h_all, n, N), nullptr,
             nullptr, nullptr, T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

ffi::Error GruBackward(Arg valid, Arg w, Arg gates, Arg hn, Arg h_prev, Arg d_ys, Arg d_h_last,
                       Arg d_h_all, Ret d_xp, Ret d_hh, Ret d_h0, Ret d_reset_h) {
  constexpr const char* call = "recurrent_jax_gru_backward";
  Sizes s;
  RJ_CHECK(sizes_of(call, "gates", gates, 3, "(..., T, B, 3H)", s));
  const int64_t N = s.runs, T = s.T, B = s.B, H = s.H, G = 3 * H, K = kept_steps(d_h_all, T);
  RJ_CHECK(check(call, s,
                 {{"valid", valid, {T, B}},
                  {"w_hh", w, {H, G}},
                  {"hn", hn, {T, B, H}},
                  {"h_prev", h_prev, {T, B, H}},
                  {"d_ys", d_ys, {T, B, H}},
                  {"d_h_last", d_h_last, {B, H}},
                  {"d_h_all", d_h_all, {K, B, H}},
                  {"d_xp", *d_xp, {T, B, G}},
                  {"d_hh", *d_hh, {T, B, G}},
                  {"d_h0", *d_h0, {B, H}},
                  {"d_reset_h", *d_reset_h, {B, H}}}));
  zero(*d_reset_h);  // accumulated into by each thread's own rows
  over_runs(N, B, 2.0 * T * B * H * G, [&](int64_t n, int64_t b0, int64_t b1) {
    gru_rows_backward(at(valid, n, N), at(w, n, N), at(gates, n, N), at(hn, n, N), at(h_prev, n, N),
                      at(d_ys, n, N), at(d_h_last, n, N), kept_at(d_h_all, n, N), at(*d_xp, n, N),
                      at(*d_hh, n, N), at(*d_h0, n, N), at(*d_reset_h, n, N), T, B, H, b0, b1);
  });
  return ffi::Error::Success();
}

// --- the input projection ----------------------------------------------------
// out (M, G) = x (M, I) @ w_ih (I, G) + bias (G): the projected inputs of
// all T * B rows at once, with the packed GEMM over row slices on the
// cores (XLA's dot at K = I, writing a (T, B, G) layout, ran at a fifth of
// this on two cores).

ffi::Error Project(Arg x, Arg w, Arg bias, Ret out) {
  constexpr const char* call = "recurrent_jax_project";
  const Dimensions d = x.dimensions();
  if (x.element_type() != ffi::DataType::F32 || d.size() < 2) {
    return ffi::Error::InvalidArgument(std::string(call) + ": x: expected f32 (..., M, I), got " +
                                       dtype_name(x.element_type()) + shape_string(d));
  }
  const Dimensions dw = w.dimensions();
  if (dw.size() < 1) {
    return ffi::Error::InvalidArgument(std::string(call) +
                                       ": w_ih: expected f32 (..., I, G), got " +
                                       dtype_name(w.element_type()) + shape_string(dw));
  }
  Sizes s;
  s.run_dims.assign(d.begin(), d.end() - 2);
  for (int64_t r : s.run_dims) s.runs *= r;
  const int64_t N = s.runs, M = d[d.size() - 2], I = d[d.size() - 1], G = dw[dw.size() - 1];
  RJ_CHECK(check(call, s, {{"w_ih", w, {I, G}}, {"bias", bias, {G}}, {"out", *out, {M, G}}}));
  over_runs(N, M, 2.0 * M * I * G, [&](int64_t n, int64_t r0, int64_t r1) {
    const Panels panels = pack_panels(at(w, n, N), I, G, false);
    gemm_acc(at(x, n, N) + r0 * I, panels, at(*out, n, N) + r0 * G, r1 - r0, at(bias, n, N));
  });
  return ffi::Error::Success();
}

}  // namespace

#define RJ_BUF ffi::AnyBuffer

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmInfer, LstmInfer,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruInfer, GruInfer,
                              ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    RjProject, Project,
    ffi::Ffi::Bind().Arg<RJ_BUF>().Arg<RJ_BUF>().Arg<RJ_BUF>().Ret<ffi::AnyBuffer>());
