// Parameters of the paper's block-sparse family D(b, q, d) (Section 4.3) and their validation.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace recsketch {

// Smallest L with 2^L >= n (n >= 1): the number of bits Enc spends on a column index.
inline int ceil_log2(std::int64_t n) noexcept {
  int bits = 0;
  // bits < 62 keeps the shift defined for every n (n > 2^62 needs 63 bits)
  while (bits < 62 && (std::int64_t{1} << bits) < n) ++bits;
  return (std::int64_t{1} << bits) < n ? bits + 1 : bits;
}

// Largest d accepted: block indices and row indices stay within 32 bits.
inline constexpr std::int64_t kMaxDSketch = (std::int64_t{1} << 31) - 1;

// Smallest density q accepted: 2^-32. Gaps between nonzero blocks are drawn from 32-bit words
// against the table floor(2^32 (1-q)^k), so a block is nonzero with probability
// 1 - floor(2^32 (1-q)) / 2^32, a multiple of 2^-32. Any q below 2^-32 would silently become
// 2^-32 (and once 1 - q rounds to 1, near q = 1.1e-16, the first entry 2^32 overflows 32 bits).
inline constexpr double kMinDensity = 1.0 / 4294967296.0;

// Algorithm 1 needs b/3 >= ceil(log2 d) + 3 entries (a leading +1, the index, two parity bits).
inline std::int64_t min_block_size(std::int64_t d) noexcept { return 3 * (ceil_log2(d) + 3); }

// The paper's block probability q = log2(d) / sqrt(d), capped at 1 (Theorem 4 asks for
// q >= polylog / sqrt(d)). It is not the library's default: the Python layer's
// recsketch.default_density picks the smallest q that leaves a column empty with probability
// at most 1e-8, which depends on the block size as well (docs/density.md).
inline double paper_density(std::int64_t d) noexcept {
  const double q = std::log2(static_cast<double>(d)) / std::sqrt(static_cast<double>(d));
  return q < 1.0 ? q : 1.0;
}

// Throws std::invalid_argument naming the first violated condition of Section 4.3.
inline void validate_block_sparse(std::int64_t d, std::int64_t b, double q) {
  using std::to_string;
  if (d < 1 || d > kMaxDSketch)
    throw std::invalid_argument("d_sketch must be in [1, 2^31 - 1], got " + to_string(d));
  if (b < 3 || b % 3 != 0)
    throw std::invalid_argument("block_size must be a positive multiple of 3, got " + to_string(b));
  if (b < min_block_size(d))
    throw std::invalid_argument("block_size " + to_string(b) + " is too small for d_sketch " +
                                to_string(d) + ": Enc needs block_size >= 3*(ceil(log2 d)+3) = " +
                                to_string(min_block_size(d)));
  if (d % b != 0)
    throw std::invalid_argument("d_sketch " + to_string(d) + " is not a multiple of block_size " +
                                to_string(b) +
                                " (recsketch.suggest_block_sparse(d) proposes valid sizes)");
  char shown[32];
  std::snprintf(shown, sizeof shown, "%.17g", q);
  if (!(q > 0.0 && q <= 1.0))
    throw std::invalid_argument(std::string("density q must be in (0, 1], got ") + shown);
  if (q < kMinDensity)
    throw std::invalid_argument(std::string("density q = ") + shown +
                                " is below 2^-32 (recsketch.MIN_DENSITY), the smallest block "
                                "probability the 32-bit gap table represents");
}

}  // namespace recsketch
