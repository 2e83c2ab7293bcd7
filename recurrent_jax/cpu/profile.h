// RECURRENT_JAX_CPU_PROFILE=1: every call prints one line to stderr per
// piece of work (the handler's setup and wait, each row slice's phases), in
// ms of wall time, to show where the milliseconds of a call go; =cpu, in ms
// of the thread's CPU time (what the work costs on a machine shared with
// other processes). Off, a lap costs one branch.

#pragma once

#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace rj {

inline const char* profile_mode() {
  static const char* mode = std::getenv("RECURRENT_JAX_CPU_PROFILE");
  return mode;
}

inline bool profiling() { return profile_mode() != nullptr; }

// ms on the profile's clock.
inline double profile_clock() {
  static const bool cpu = profiling() && std::string(profile_mode()) == "cpu";
  timespec t;
  clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return 1e3 * t.tv_sec + 1e-6 * t.tv_nsec;
}

// "name a..b" when profiling, else empty (no formatting on the hot path).
inline std::string label(const char* name, int64_t a, int64_t b) {
  return profiling() ? std::string(name) + " " + std::to_string(a) + ".." + std::to_string(b) : "";
}

// Time since construction or the last lap, added to one of up to 4 named
// phases; printed when destroyed.
class Laps {
 public:
  Laps(std::string what, std::initializer_list<const char*> phases)
      : on_(profiling()), what_(std::move(what)) {
    int i = 0;
    for (const char* phase : phases) names_[i++] = phase;
    if (on_) start_ = last_ = profile_clock();
  }

  void operator()(int phase) {
    if (!on_) return;
    const double now = profile_clock();
    ms_[phase] += now - last_;
    last_ = now;
  }

  ~Laps() {
    if (!on_) return;
    std::string line = "recurrent_jax cpu: " + what_;
    for (int i = 0; i < 4 && names_[i]; ++i) line += " " + std::string(names_[i]) + " " + ms(i);
    const double total = profile_clock() - start_;
    std::fprintf(stderr, "%s total %.3f\n", line.c_str(), total);
  }

 private:
  std::string ms(int i) const {
    char out[32];
    std::snprintf(out, sizeof(out), "%.3f", ms_[i]);
    return out;
  }

  bool on_;
  std::string what_;
  const char* names_[4] = {};
  double ms_[4] = {};
  double start_ = 0, last_ = 0;
};

}  // namespace rj
