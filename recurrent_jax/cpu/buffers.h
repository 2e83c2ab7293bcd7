// The buffers of a call: every handler checks the dtype, rank and every
// dimension of every buffer it reads or writes before touching any of them,
// and returns an InvalidArgument error naming the buffer otherwise: the
// sizes come from the Python side, which is never trusted with memory
// safety.
//
// Under jax.vmap (vmap_method="broadcast_all") every operand gains the same
// leading run axes; run n's slice of a buffer is its n-th of `runs` parts.

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace rj {

namespace ffi = xla::ffi;
using Dimensions = ffi::AnyBuffer::Dimensions;

inline std::string dtype_name(ffi::DataType dtype) {
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

inline std::string shape_string(Dimensions dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

inline ffi::Error invalid(const char* call, const char* name, const std::string& expected,
                          const ffi::AnyBuffer& got) {
  return ffi::Error::InvalidArgument(std::string(call) + ": " + name + ": expected " + expected +
                                     ", got " + dtype_name(got.element_type()) +
                                     shape_string(got.dimensions()));
}

// One buffer and the shape it must have after the run axes.
struct Operand {
  const char* name;
  const ffi::AnyBuffer& buffer;
  std::vector<int64_t> trailing;
};

// The run axes shared by every operand and the sizes of one call: T steps,
// B rows, I inputs, H units.
struct Sizes {
  std::vector<int64_t> run_dims;
  int64_t runs = 1, T = 0, B = 0, I = 0, H = 0;
};

// Reads the run axes, T and B of a call from `lead` (..., T, B, F), and F
// into `last`; an error naming it when it is not f32 of rank >= 3.
inline ffi::Error sequence_sizes(const char* call, const char* name, const ffi::AnyBuffer& lead,
                                 Sizes& s, int64_t& last) {
  const Dimensions d = lead.dimensions();
  if (lead.element_type() != ffi::DataType::F32 || d.size() < 3) {
    return invalid(call, name, "f32 (..., T, B, F)", lead);
  }
  s.run_dims.assign(d.begin(), d.end() - 3);
  for (int64_t r : s.run_dims) s.runs *= r;
  s.T = d[d.size() - 3];
  s.B = d[d.size() - 2];
  last = d[d.size() - 1];
  return ffi::Error::Success();
}

// Reads H from w_hh (..., H, gates * H); an error naming it otherwise.
inline ffi::Error hidden_size(const char* call, const ffi::AnyBuffer& w_hh, int64_t gates,
                              Sizes& s) {
  const Dimensions d = w_hh.dimensions();
  const bool ok = w_hh.element_type() == ffi::DataType::F32 && d.size() >= 2 &&
                  d[d.size() - 1] == gates * d[d.size() - 2];
  if (!ok) return invalid(call, "w_hh", "f32 (..., H, " + std::to_string(gates) + "H)", w_hh);
  s.H = d[d.size() - 2];
  return ffi::Error::Success();
}

// Success, or an InvalidArgument error naming the first operand that is not
// f32 of shape (*run_dims, *trailing).
inline ffi::Error check(const char* call, const Sizes& s, std::initializer_list<Operand> operands) {
  for (const Operand& op : operands) {
    std::vector<int64_t> want(s.run_dims);
    want.insert(want.end(), op.trailing.begin(), op.trailing.end());
    const Dimensions got = op.buffer.dimensions();
    const bool same_shape = std::equal(got.begin(), got.end(), want.begin(), want.end());
    if (op.buffer.element_type() != ffi::DataType::F32 || !same_shape) {
      return invalid(call, op.name, "f32" + shape_string(Dimensions(want.data(), want.size())),
                     op.buffer);
    }
  }
  return ffi::Error::Success();
}

// Run n's part of a checked buffer.
inline float* at(const ffi::AnyBuffer& buffer, int64_t n, int64_t runs) {
  return static_cast<float*>(buffer.untyped_data()) +
         n * (static_cast<int64_t>(buffer.element_count()) / runs);
}

// Steps of a per-step carry buffer: T when kept, 0 when not; an error
// then names the buffer with T expected.
inline int64_t kept_steps(const ffi::AnyBuffer& buffer, int64_t T) {
  const Dimensions d = buffer.dimensions();
  return d.size() >= 3 && d[d.size() - 3] == 0 ? 0 : T;
}

// Run n's part of a per-step carry buffer, or null when it is not kept.
inline float* kept_at(const ffi::AnyBuffer& buffer, int64_t n, int64_t runs) {
  return buffer.element_count() ? at(buffer, n, runs) : nullptr;
}

inline void zero(const ffi::AnyBuffer& buffer) {
  std::memset(buffer.untyped_data(), 0, buffer.element_count() * sizeof(float));
}

}  // namespace rj
