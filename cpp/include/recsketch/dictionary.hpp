// The block-scanning step of recursable dictionary learning (paper Section 4.2, MATH.md §4.2):
// every block of every sample is l1-normalised, tested for closeness to the scaled hypercube
// (one dominant column), rounded to its sign pattern, decoded (column index, parity bits, sign
// of the coefficient) and reduced to a canonical key that is the same for every nonzero block of
// the column whatever the per-block flips. Grouping, voting and assembling run on these records.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "enc.hpp"
#include "multiversion.hpp"
#include "parallel.hpp"

namespace recsketch {

// One accepted block of one sample.
struct BlockRecord {
  std::int64_t sample = 0;
  std::int64_t block = 0;
  std::int64_t column = 0;          // decoded 0-based column index j
  std::uint64_t string_key = 0;     // u_s * u_s[0] as bits (bit r set: entry r is -1)
  std::uint64_t signature_key = 0;  // u_m * u_m[0] as bits: the matrix's canonical signature
  std::uint64_t pattern[3] = {0, 0, 0};  // the column's signs in this block (coefficient sign
                                         // removed), one word per sub-block
  double magnitude = 0.0;           // |x_j| estimated from the block's l1 norm
  int sign = 0;                     // sign of the coefficient
  double closeness = 0.0;           // max_k | |u_k| - 1 |, the hypercube distance
};

struct ScanParams {
  std::int64_t d = 0, b = 0;
  int index_bits = 0;
  double scale = 0.0;  // 1 / sqrt(d q): |entry| of a nonzero block
  double tau = 0.5;    // accept a block when max_k | |u_k| - 1 | <= tau, u = b v / |v|_1
};

namespace detail {

// l1 norm, smallest and largest |v_k| of a block in one pass. Eight partial sums added in a fixed
// order break the dependency chain of the sum without changing its bits between builds.
template <class T>
RECSKETCH_MULTIVERSION void block_stats(const T* v, std::int64_t b, double& l1, double& lo,
                                        double& hi) noexcept {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  T mn = std::numeric_limits<T>::max(), mx = T(0);
  std::int64_t k = 0;
  for (; k + 8 <= b; k += 8)
    for (int t = 0; t < 8; ++t) {
      const T a = v[k + t] < T(0) ? -v[k + t] : v[k + t];
      s[t] += static_cast<double>(a);
      mn = a < mn ? a : mn;
      mx = a > mx ? a : mx;
    }
  for (; k < b; ++k) {
    const T a = v[k] < T(0) ? -v[k] : v[k];
    s[0] += static_cast<double>(a);
    mn = a < mn ? a : mn;
    mx = a > mx ? a : mx;
  }
  l1 = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  lo = static_cast<double>(mn);
  hi = static_cast<double>(mx);
}

// Sign bits of v[0 .. n) (bit k set: v[k] < 0), n <= 64.
template <class T>
inline std::uint64_t sign_mask(const T* v, std::int64_t n) noexcept {
  std::uint64_t w = 0;
  for (std::int64_t k = 0; k < n; ++k) w |= static_cast<std::uint64_t>(v[k] < T(0)) << k;
  return w;
}

// Enc decoding (the same rules as decode_block in enc.hpp) on the three sub-blocks' sign bits.
// Returns false for a block that is not a valid codeword.
inline bool decode_bits(std::uint64_t ms, std::uint64_t mc, std::uint64_t mm, std::int64_t third,
                        int L, std::int64_t d, BlockRecord& r) noexcept {
  const std::uint64_t ones = third == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << third) - 1;
  const std::uint64_t c = (mc & 1) ? (mc ^ ones) : mc;  // Enc's pattern, bit set: entry -1
  // positions L + 3 .. third - 1 are Enc's +1 padding
  const std::uint64_t padding = ones & ~((std::uint64_t{1} << (L + 3)) - 1);
  if (c & padding) return false;
  std::int64_t j = 0;
  for (int t = 0; t < L; ++t) j = (j << 1) | static_cast<std::int64_t>(((c >> (1 + t)) & 1) == 0);
  if (j >= d) return false;
  const int b_m = ((c >> (L + 1)) & 1) ? -1 : 1, b_s = ((c >> (L + 2)) & 1) ? -1 : 1;
  const int g_m = ((mm & 1) ? -1 : 1) * b_m, g_s = ((ms & 1) ? -1 : 1) * b_s;
  if (g_m != g_s) return false;
  r.column = j;
  r.sign = g_m;
  r.string_key = (ms & 1) ? (ms ^ ones) : ms;
  r.signature_key = (mm & 1) ? (mm ^ ones) : mm;
  const std::uint64_t flip = g_m < 0 ? ones : 0;
  r.pattern[0] = ms ^ flip;
  r.pattern[1] = mc ^ flip;
  r.pattern[2] = mm ^ flip;
  return true;
}

template <class T>
void scan_sample(const T* y, std::int64_t sample, const ScanParams& p,
                 std::vector<BlockRecord>& out) {
  const std::int64_t b = p.b, third = b / 3, n_blocks = p.d / b;
  for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
    const T* v = y + blk * b;
    double l1, lo, hi;
    block_stats(v, b, l1, lo, hi);
    if (!(l1 > 0.0) || !std::isfinite(l1)) continue;
    // max_k | |u_k| - 1 | with u = b v / |v|_1, from the extreme magnitudes alone
    const double inv = static_cast<double>(b) / l1;
    const double worst = std::max(hi * inv - 1.0, 1.0 - lo * inv);
    if (worst > p.tau) continue;
    BlockRecord r;
    if (!decode_bits(sign_mask(v, third), sign_mask(v + third, third),
                     sign_mask(v + 2 * third, third), third, p.index_bits, p.d, r))
      continue;
    r.sample = sample;
    r.block = blk;
    r.closeness = worst;
    r.magnitude = l1 / static_cast<double>(b) / p.scale;
    out.push_back(r);
  }
}

}  // namespace detail

// Scans the n rows of Y (n x d, row-major). Records come out in (sample, block) order for any
// thread count.
template <class T>
std::vector<BlockRecord> scan_blocks(const T* Y, std::int64_t n, const ScanParams& p,
                                     std::int64_t first_sample, int num_threads) {
  if (p.b % 3 != 0 || p.b / 3 > 64 || p.d % p.b != 0)
    throw std::invalid_argument("block size must be a multiple of 3, at most 192, dividing d");
  constexpr std::int64_t kSamplesPerTask = 16;
  const std::int64_t tasks = (n + kSamplesPerTask - 1) / kSamplesPerTask;
  std::vector<std::vector<BlockRecord>> parts(static_cast<std::size_t>(tasks));
  parallel_for(tasks, num_threads, [&](std::int64_t t) {
    const std::int64_t s1 = std::min(n, (t + 1) * kSamplesPerTask);
    for (std::int64_t s = t * kSamplesPerTask; s < s1; ++s)
      detail::scan_sample(Y + s * p.d, first_sample + s, p, parts[static_cast<std::size_t>(t)]);
  });
  std::vector<BlockRecord> out;
  std::size_t total = 0;
  for (const auto& part : parts) total += part.size();
  out.reserve(total);
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

}  // namespace recsketch
