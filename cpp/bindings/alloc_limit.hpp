// The allocation limit: one process-wide byte budget that every native entry point whose output
// or scratch size is a product of its arguments (d_sketch x rows, columns, nonzeros, ...) checks
// before it allocates anything of that size. The Python layer checks the same limit
// (recsketch._checks.check_alloc), and materialisation (to_dense, to_scipy) obeys it too.
//
// Why a fixed budget and not "whatever the machine can hold": honest sizes are a few GiB at most
// (a 64k sketch per graph, d = 524k samples); a mistyped size asks for terabytes, and on Linux an
// overcommitted allocation of tens of GiB succeeds and then takes the machine down page by page.
// A user who means it raises the limit (recsketch.set_alloc_limit).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

namespace recsketch_bind {

inline constexpr std::uint64_t kDefaultAllocLimit = std::uint64_t{4} << 30;  // 4 GiB

inline std::atomic<std::uint64_t>& alloc_limit() noexcept {
  static std::atomic<std::uint64_t> limit{kDefaultAllocLimit};
  return limit;
}

// a * b and a + b saturating at 2^64 - 1: a size that overflows is above any limit.
inline std::uint64_t mul_bytes(std::uint64_t a, std::uint64_t b) noexcept {
  return a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a
             ? std::numeric_limits<std::uint64_t>::max()
             : a * b;
}
inline std::uint64_t add_bytes(std::uint64_t a, std::uint64_t b) noexcept {
  return b > std::numeric_limits<std::uint64_t>::max() - a ? std::numeric_limits<std::uint64_t>::max()
                                                           : a + b;
}

inline std::string gib(std::uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / 1073741824.0);
  return buf;
}

// ValueError (std::invalid_argument) if `bytes` exceeds the limit. `what` names the call and the
// arguments responsible, e.g. "column_counts(columns=1600000000): 8 bytes per column".
inline void check_alloc(std::uint64_t bytes, const std::string& what) {
  const std::uint64_t limit = alloc_limit().load(std::memory_order_relaxed);
  if (bytes > limit)
    throw std::invalid_argument(what + " would need " + std::to_string(bytes) + " bytes (" +
                                gib(bytes) + "), above the allocation limit of " + gib(limit) +
                                " (recsketch.set_alloc_limit changes it)");
}

}  // namespace recsketch_bind
