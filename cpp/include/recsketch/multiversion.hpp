// RECSKETCH_MULTIVERSION: compile a hot loop twice and pick at load time.
#pragma once

// The hot loops are compiled twice on x86-64 Linux with GCC, for the baseline ISA and for AVX2,
// and chosen at load time (ifunc): portable wheels that still use AVX2 where it exists. The loops
// are element-wise adds and products (no FMA: -ffp-contract=off, and AVX2 alone does not enable
// FMA), so both versions produce the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(RECSKETCH_NO_MULTIVERSION)
#define RECSKETCH_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define RECSKETCH_MULTIVERSION
#endif

#include <atomic>

namespace recsketch {

// Tests only (recsketch._native._core._set_baseline_isa): when set, the block-sparse kernels
// run their copy built for the baseline ISA instead of the one chosen at load time, so a test can
// check that both copies give the same bits on a machine with AVX2. Process-wide.
inline std::atomic<bool>& baseline_isa_forced() noexcept {
  static std::atomic<bool> forced{false};
  return forced;
}

// Body, an always-inline kernel, compiled for the ISAs of RECSKETCH_MULTIVERSION and chosen at
// load time ...
template <auto Body, class First, class... Args>
RECSKETCH_MULTIVERSION void isa_clones(const First& first, Args... args) {
  Body(first, args...);
}

// ... and for the baseline ISA only (tests: baseline_isa_forced).
template <auto Body, class First, class... Args>
void isa_baseline(const First& first, Args... args) {
  Body(first, args...);
}

// Runs Body(first, args...) in the copy the process uses. The first argument (the matrix) is
// passed by reference, the others by value.
template <auto Body, class First, class... Args>
void isa_dispatch(const First& first, Args... args) {
  if (baseline_isa_forced().load(std::memory_order_relaxed))
    isa_baseline<Body>(first, args...);
  else
    isa_clones<Body>(first, args...);
}

}  // namespace recsketch
