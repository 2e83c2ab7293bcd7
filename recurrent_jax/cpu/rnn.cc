// The CPU backend's recurrences: plain LSTM and GRU (reset after), forward,
// inference and backward, as XLA FFI custom calls. One call runs all T
// steps with no per-step dispatch; the input projection happens inside
// each step's product (lstm.h, gru.h), and the backward gives the
// cotangents of the inputs, of both weight matrices and of the bias too.
//
// Layouts (row-major, time-major): x (T, B, I) inputs, valid (T, B), w_ih
// (I, G), bias (G) (the cell's projection of a zero input: its biases as
// the cell sums them), w_hh (H, G), h0/c0 and reset_h/reset_c (B, H). G =
// 4H (LSTM, gates i f g o) or 3H (GRU, r z n; b_hn (H) apart). valid is 0
// on a padded step, which keeps the carry and outputs zeros (the engine's
// _step.finish), 1 on a valid step and 2 on a valid step that first
// restarts the carry from reset_h/reset_c (packed rows: _step.restart);
// the backward then sends the carry's cotangent there (d_reset_h/c).
// h_all/c_all, the carry after every step, are (T, B, H) when kept (a
// packed row's sequences end inside it) or (0, B, H); their cotangents
// d_h_all/d_c_all likewise. The forward call saves what the backward reads
// (gate activations, the carries entering each step) and nothing else.

#include "buffers.h"
#include "gru.h"
#include "lstm.h"
#include "profile.h"
#include "steps.h"

namespace rj {
namespace {

using Arg = ffi::AnyBuffer;
using Ret = ffi::Result<ffi::AnyBuffer>;

// Returns from the handler when `expr` (an ffi::Error) failed.
#define RJ_CHECK(expr)                       \
  do {                                       \
    ffi::Error rj_error = (expr);            \
    if (rj_error.failure()) return rj_error; \
  } while (0)

// T, B and I from x (..., T, B, I); H from w_hh (..., H, gates * H).
ffi::Error sizes_of(const char* call, const Arg& x, const Arg& w_hh, int64_t gates, Sizes& s) {
  RJ_CHECK(sequence_sizes(call, "x", x, s, s.I));
  return hidden_size(call, w_hh, gates, s);
}

double flops(const Sizes& s, int64_t G) { return 2.0 * s.T * s.B * (s.I + s.H) * G; }

// --- LSTM -------------------------------------------------------------------------

// The forward and inference calls: the residuals are null for inference.
ffi::Error lstm_forward(const char* call, Arg& x, Arg& valid, Arg& w_ih, Arg& bias, Arg& w_hh,
                        Arg& h0, Arg& c0, Arg& reset_h, Arg& reset_c, Arg& ys, Arg& h_last,
                        Arg& c_last, Arg& h_all, Arg& c_all, Arg* gates, Arg* h_prev,
                        Arg* c_prev) {
  Laps laps(profiling() ? call : "", {"checks", "rows"});
  Sizes s;
  RJ_CHECK(sizes_of(call, x, w_hh, 4, s));
  const int64_t N = s.runs, T = s.T, B = s.B, I = s.I, H = s.H, G = 4 * H;
  const int64_t K = kept_steps(h_all, T);
  RJ_CHECK(check(call, s,
                 {{"x", x, {T, B, I}},
                  {"valid", valid, {T, B}},
                  {"w_ih", w_ih, {I, G}},
                  {"bias", bias, {G}},
                  {"w_hh", w_hh, {H, G}},
                  {"h0", h0, {B, H}},
                  {"c0", c0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"reset_c", reset_c, {B, H}},
                  {"ys", ys, {T, B, H}},
                  {"h_last", h_last, {B, H}},
                  {"c_last", c_last, {B, H}},
                  {"h_all", h_all, {K, B, H}},
                  {"c_all", c_all, {K, B, H}}}));
  if (gates) {
    RJ_CHECK(check(call, s,
                   {{"gates", *gates, {T, B, G}},
                    {"h_prev", *h_prev, {T, B, H}},
                    {"c_prev", *c_prev, {T, B, H}}}));
  }
  const auto residual = [&](Arg* buffer, int64_t n) {
    return buffer ? at(*buffer, n, N) : nullptr;
  };
  laps(0);
  const auto pack = [&](int64_t n) {
    return LstmWeights{pack_panels(at(w_ih, n, N), I, G, false),
                       pack_panels(at(w_hh, n, N), H, G, false)};
  };
  over_rows_packed(split(N, B, flops(s, G)), B, pack,
                   [&](const LstmWeights& w, int64_t n, int64_t b0, int64_t b1, int64_t) {
                     const auto in = [&](const Arg& buffer) { return at(buffer, n, N); };
                     const LstmForward a{in(x),
                                         in(valid),
                                         in(bias),
                                         in(h0),
                                         in(c0),
                                         in(reset_h),
                                         in(reset_c),
                                         in(ys),
                                         in(h_last),
                                         in(c_last),
                                         kept_at(h_all, n, N),
                                         kept_at(c_all, n, N),
                                         residual(gates, n),
                                         residual(h_prev, n),
                                         residual(c_prev, n),
                                         T,
                                         B,
                                         I,
                                         H};
                     lstm_rows(a, w, b0, b1);
                   });
  laps(1);
  return ffi::Error::Success();
}

ffi::Error LstmForwardCall(Arg x, Arg valid, Arg w_ih, Arg bias, Arg w_hh, Arg h0, Arg c0,
                           Arg reset_h, Arg reset_c, Ret ys, Ret h_last, Ret c_last, Ret h_all,
                           Ret c_all, Ret gates, Ret h_prev, Ret c_prev) {
  return lstm_forward("recurrent_jax_lstm_forward", x, valid, w_ih, bias, w_hh, h0, c0, reset_h,
                      reset_c, *ys, *h_last, *c_last, *h_all, *c_all, &*gates, &*h_prev,
                      &*c_prev);
}

ffi::Error LstmInferCall(Arg x, Arg valid, Arg w_ih, Arg bias, Arg w_hh, Arg h0, Arg c0,
                         Arg reset_h, Arg reset_c, Ret ys, Ret h_last, Ret c_last, Ret h_all,
                         Ret c_all) {
  return lstm_forward("recurrent_jax_lstm_infer", x, valid, w_ih, bias, w_hh, h0, c0, reset_h,
                      reset_c, *ys, *h_last, *c_last, *h_all, *c_all, nullptr, nullptr, nullptr);
}

ffi::Error LstmBackwardCall(Arg x, Arg valid, Arg w_ih, Arg w_hh, Arg gates, Arg h_prev,
                            Arg c_prev, Arg d_ys, Arg d_h_last, Arg d_c_last, Arg d_h_all,
                            Arg d_c_all, Ret d_x, Ret d_w_ih, Ret d_bias, Ret d_w_hh, Ret d_h0,
                            Ret d_c0, Ret d_reset_h, Ret d_reset_c) {
  constexpr const char* call = "recurrent_jax_lstm_backward";
  Laps laps(profiling() ? call : "", {"setup", "rows", "reduce"});
  Sizes s;
  RJ_CHECK(sizes_of(call, x, w_hh, 4, s));
  const int64_t N = s.runs, T = s.T, B = s.B, I = s.I, H = s.H, G = 4 * H;
  const int64_t K = kept_steps(d_h_all, T);
  RJ_CHECK(check(call, s,
                 {{"x", x, {T, B, I}},
                  {"valid", valid, {T, B}},
                  {"w_ih", w_ih, {I, G}},
                  {"w_hh", w_hh, {H, G}},
                  {"gates", gates, {T, B, G}},
                  {"h_prev", h_prev, {T, B, H}},
                  {"c_prev", c_prev, {T, B, H}},
                  {"d_ys", d_ys, {T, B, H}},
                  {"d_h_last", d_h_last, {B, H}},
                  {"d_c_last", d_c_last, {B, H}},
                  {"d_h_all", d_h_all, {K, B, H}},
                  {"d_c_all", d_c_all, {K, B, H}},
                  {"d_x", *d_x, {T, B, I}},
                  {"d_w_ih", *d_w_ih, {I, G}},
                  {"d_bias", *d_bias, {G}},
                  {"d_w_hh", *d_w_hh, {H, G}},
                  {"d_h0", *d_h0, {B, H}},
                  {"d_c0", *d_c0, {B, H}},
                  {"d_reset_h", *d_reset_h, {B, H}},
                  {"d_reset_c", *d_reset_c, {B, H}}}));
  for (Arg* sum : {&*d_w_ih, &*d_bias, &*d_w_hh, &*d_reset_h, &*d_reset_c}) zero(*sum);
  const Split plan = split(N, B, 2 * flops(s, G));
  // One slice's weight gradients, contiguous: d_w_ih, d_w_hh, d_bias.
  Partials partial_ih(plan, I * G), partial_hh(plan, H * G), partial_bias(plan, G);
  laps(0);
  const auto pack = [&](int64_t n) {
    return LstmWeights{pack_panels(at(w_ih, n, N), G, I, true),
                       pack_panels(at(w_hh, n, N), G, H, true)};
  };
  over_rows_packed(plan, B, pack,
                   [&](const LstmWeights& wt, int64_t n, int64_t b0, int64_t b1, int64_t slice) {
                     const auto in = [&](const Arg& buffer) { return at(buffer, n, N); };
                     const LstmBackward a{
                         in(x),          in(valid),     in(gates),     in(h_prev),
                         in(c_prev),     in(d_ys),      in(d_h_last),  in(d_c_last),
                         kept_at(d_h_all, n, N), kept_at(d_c_all, n, N),
                         in(*d_x),       in(*d_h0),     in(*d_c0),     in(*d_reset_h),
                         in(*d_reset_c), partial_ih.of(slice, in(*d_w_ih)),
                         partial_hh.of(slice, in(*d_w_hh)), partial_bias.of(slice, in(*d_bias)),
                         T, B, I, H};
                     lstm_rows_backward(a, wt, b0, b1);
                   });
  laps(1);
  partial_ih.add_into(at(*d_w_ih, 0, N));  // more than one slice: a single run
  partial_hh.add_into(at(*d_w_hh, 0, N));
  partial_bias.add_into(at(*d_bias, 0, N));
  laps(2);
  return ffi::Error::Success();
}

// --- GRU --------------------------------------------------------------------------

ffi::Error gru_forward(const char* call, Arg& x, Arg& valid, Arg& w_ih, Arg& bias, Arg& w_hh,
                       Arg& b_hn, Arg& h0, Arg& reset_h, Arg& ys, Arg& h_last, Arg& h_all,
                       Arg* gates, Arg* hn, Arg* h_prev) {
  Laps laps(profiling() ? call : "", {"checks", "rows"});
  Sizes s;
  RJ_CHECK(sizes_of(call, x, w_hh, 3, s));
  const int64_t N = s.runs, T = s.T, B = s.B, I = s.I, H = s.H, G = 3 * H;
  const int64_t K = kept_steps(h_all, T);
  RJ_CHECK(check(call, s,
                 {{"x", x, {T, B, I}},
                  {"valid", valid, {T, B}},
                  {"w_ih", w_ih, {I, G}},
                  {"bias", bias, {G}},
                  {"w_hh", w_hh, {H, G}},
                  {"b_hn", b_hn, {H}},
                  {"h0", h0, {B, H}},
                  {"reset_h", reset_h, {B, H}},
                  {"ys", ys, {T, B, H}},
                  {"h_last", h_last, {B, H}},
                  {"h_all", h_all, {K, B, H}}}));
  if (gates) {
    RJ_CHECK(check(call, s,
                   {{"gates", *gates, {T, B, G}},
                    {"hn", *hn, {T, B, H}},
                    {"h_prev", *h_prev, {T, B, H}}}));
  }
  const auto residual = [&](Arg* buffer, int64_t n) {
    return buffer ? at(*buffer, n, N) : nullptr;
  };
  laps(0);
  const auto pack = [&](int64_t n) {
    return GruWeights{pack_panels(at(w_ih, n, N), I, G, false),
                      pack_panels(at(w_hh, n, N), H, G, false)};
  };
  over_rows_packed(split(N, B, flops(s, G)), B, pack,
                   [&](const GruWeights& w, int64_t n, int64_t b0, int64_t b1, int64_t) {
                     const auto in = [&](const Arg& buffer) { return at(buffer, n, N); };
                     const GruForward a{
                         in(x),      in(valid),  in(bias),  in(b_hn), in(h0), in(reset_h),
                         in(ys),     in(h_last), kept_at(h_all, n, N), residual(gates, n),
                         residual(hn, n), residual(h_prev, n), T, B, I, H};
                     gru_rows(a, w, b0, b1);
                   });
  laps(1);
  return ffi::Error::Success();
}

ffi::Error GruForwardCall(Arg x, Arg valid, Arg w_ih, Arg bias, Arg w_hh, Arg b_hn, Arg h0,
                          Arg reset_h, Ret ys, Ret h_last, Ret h_all, Ret gates, Ret hn,
                          Ret h_prev) {
  return gru_forward("recurrent_jax_gru_forward", x, valid, w_ih, bias, w_hh, b_hn, h0, reset_h,
                     *ys, *h_last, *h_all, &*gates, &*hn, &*h_prev);
}

ffi::Error GruInferCall(Arg x, Arg valid, Arg w_ih, Arg bias, Arg w_hh, Arg b_hn, Arg h0,
                        Arg reset_h, Ret ys, Ret h_last, Ret h_all) {
  return gru_forward("recurrent_jax_gru_infer", x, valid, w_ih, bias, w_hh, b_hn, h0, reset_h,
                     *ys, *h_last, *h_all, nullptr, nullptr, nullptr);
}

ffi::Error GruBackwardCall(Arg x, Arg valid, Arg w_ih, Arg w_hh, Arg gates, Arg hn, Arg h_prev,
                           Arg d_ys, Arg d_h_last, Arg d_h_all, Ret d_x, Ret d_w_ih, Ret d_bias,
                           Ret d_w_hh, Ret d_b_hn, Ret d_h0, Ret d_reset_h) {
  constexpr const char* call = "recurrent_jax_gru_backward";
  Laps laps(profiling() ? call : "", {"setup", "rows", "reduce"});
  Sizes s;
  RJ_CHECK(sizes_of(call, x, w_hh, 3, s));
  const int64_t N = s.runs, T = s.T, B = s.B, I = s.I, H = s.H, G = 3 * H;
  const int64_t K = kept_steps(d_h_all, T);
  RJ_CHECK(check(call, s,
                 {{"x", x, {T, B, I}},
                  {"valid", valid, {T, B}},
                  {"w_ih", w_ih, {I, G}},
                  {"w_hh", w_hh, {H, G}},
                  {"gates", gates, {T, B, G}},
                  {"hn", hn, {T, B, H}},
                  {"h_prev", h_prev, {T, B, H}},
                  {"d_ys", d_ys, {T, B, H}},
                  {"d_h_last", d_h_last, {B, H}},
                  {"d_h_all", d_h_all, {K, B, H}},
                  {"d_x", *d_x, {T, B, I}},
                  {"d_w_ih", *d_w_ih, {I, G}},
                  {"d_bias", *d_bias, {G}},
                  {"d_w_hh", *d_w_hh, {H, G}},
                  {"d_b_hn", *d_b_hn, {H}},
                  {"d_h0", *d_h0, {B, H}},
                  {"d_reset_h", *d_reset_h, {B, H}}}));
  for (Arg* sum : {&*d_w_ih, &*d_bias, &*d_w_hh, &*d_b_hn, &*d_reset_h}) zero(*sum);
  const Split plan = split(N, B, 2 * flops(s, G));
  Partials partial_ih(plan, I * G), partial_hh(plan, H * G), partial_bias(plan, G),
      partial_bn(plan, H);
  laps(0);
  const auto pack = [&](int64_t n) {
    return GruWeights{pack_panels(at(w_ih, n, N), G, I, true),
                      pack_panels(at(w_hh, n, N), G, H, true)};
  };
  over_rows_packed(plan, B, pack,
                   [&](const GruWeights& wt, int64_t n, int64_t b0, int64_t b1, int64_t slice) {
                     const auto in = [&](const Arg& buffer) { return at(buffer, n, N); };
                     const GruBackward a{
                         in(x),      in(valid),     in(gates),     in(hn),
                         in(h_prev), in(d_ys),      in(d_h_last),  kept_at(d_h_all, n, N),
                         in(*d_x),   in(*d_h0),     in(*d_reset_h),
                         partial_ih.of(slice, in(*d_w_ih)), partial_hh.of(slice, in(*d_w_hh)),
                         partial_bias.of(slice, in(*d_bias)), partial_bn.of(slice, in(*d_b_hn)),
                         T, B, I, H};
                     gru_rows_backward(a, wt, b0, b1);
                   });
  laps(1);
  partial_ih.add_into(at(*d_w_ih, 0, N));  // more than one slice: a single run
  partial_hh.add_into(at(*d_w_hh, 0, N));
  partial_bias.add_into(at(*d_bias, 0, N));
  partial_bn.add_into(at(*d_b_hn, 0, N));
  laps(2);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rj

#define RJ_BUF xla::ffi::AnyBuffer

// The handlers' bindings: every buffer in, then every result.
XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmForward, rj::LstmForwardCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmInfer, rj::LstmInferCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjLstmBackward, rj::LstmBackwardCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruForward, rj::GruForwardCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruInfer, rj::GruInferCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjGruBackward, rj::GruBackwardCall,
                              xla::ffi::Ffi::Bind()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Arg<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>()
                                  .Ret<RJ_BUF>());
