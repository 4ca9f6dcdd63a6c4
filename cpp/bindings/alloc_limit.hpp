// The allocation limit: one process-wide byte budget that every native entry point whose output
// or scratch size is a product of its arguments (d_sketch x rows, columns, nonzeros, ...) checks
// before it allocates anything of that size. The Python layer checks the same limit with the
// same function (recsketch.alloc.check_alloc calls check_alloc below), and materialisation
// (to_dense, to_scipy) obeys it too.
//
// The default is max(4 GiB, half the physical memory), read once when the module loads
// (sysconf; 4 GiB where the memory size is unknown). Why a budget and not "whatever the machine
// can hold": a mistyped size asks for terabytes, and on Linux an overcommitted allocation of
// tens of GiB succeeds and then takes the machine down page by page; half the memory leaves
// room for the rest of the process and the machine, and 4 GiB holds every honest size
// recsketch's benchmarks use on any machine. A user who means it raises the limit
// (recsketch.set_alloc_limit, or None for no limit).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "recsketch/bytes.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace recsketch_bind {

inline constexpr std::uint64_t kMinDefaultAllocLimit = std::uint64_t{4} << 30;  // 4 GiB

// max(4 GiB, half the physical memory); 4 GiB where sysconf cannot tell.
inline std::uint64_t default_alloc_limit() noexcept {
  static const std::uint64_t value = [] {
    std::uint64_t half = 0;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0)
      half = static_cast<std::uint64_t>(pages) / 2 * static_cast<std::uint64_t>(page);
#endif
    return std::max(kMinDefaultAllocLimit, half);
  }();
  return value;
}

inline std::atomic<std::uint64_t>& alloc_limit() noexcept {
  static std::atomic<std::uint64_t> limit{default_alloc_limit()};
  return limit;
}

// a * b and a + b saturating at 2^64 - 1 (recsketch/bytes.hpp).
using recsketch::add_bytes;
using recsketch::mul_bytes;

// bytes in the largest binary unit that leaves at least 1 (B, KiB, MiB, GiB, TiB, PiB, EiB),
// one decimal: "0.0 GiB" said nothing about a 300 KiB request.
inline std::string gib(std::uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (u < 6 && v >= 1024.0) {
    v /= 1024.0;
    ++u;
  }
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

// ValueError (std::invalid_argument) if `bytes` exceeds the limit. `what` names the call and the
// arguments responsible, e.g. "column_counts(columns=1600000000): 8 bytes per column"; `hint`,
// if any, follows the message after "; ". The one rule and message for both layers: the Python
// layer's recsketch.alloc.check_alloc calls this (_core.check_alloc).
inline void check_alloc(std::uint64_t bytes, const std::string& what, const std::string& hint = {}) {
  const std::uint64_t limit = alloc_limit().load(std::memory_order_relaxed);
  if (bytes > limit)
    throw std::invalid_argument(what + " would need " + std::to_string(bytes) + " bytes (" +
                                gib(bytes) + "), above the allocation limit of " + gib(limit) +
                                " (recsketch.set_alloc_limit changes it)" +
                                (hint.empty() ? std::string() : "; " + hint));
}

}  // namespace recsketch_bind
