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

}  // namespace recsketch
