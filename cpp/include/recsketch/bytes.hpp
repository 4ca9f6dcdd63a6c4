// Byte counts that saturate: a size computed from the caller's arguments can overflow 64 bits
// (rows x d of a mistyped size), and a wrapped count would pass an allocation check. Saturated
// at 2^64 - 1, it is above any limit.
#pragma once

#include <cstdint>
#include <limits>

namespace recsketch {

inline std::uint64_t mul_bytes(std::uint64_t a, std::uint64_t b) noexcept {
  return a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a
             ? std::numeric_limits<std::uint64_t>::max()
             : a * b;
}

inline std::uint64_t add_bytes(std::uint64_t a, std::uint64_t b) noexcept {
  return b > std::numeric_limits<std::uint64_t>::max() - a ? std::numeric_limits<std::uint64_t>::max()
                                                           : a + b;
}

}  // namespace recsketch
