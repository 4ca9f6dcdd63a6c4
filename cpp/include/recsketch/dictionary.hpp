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
#include <type_traits>
#include <vector>

#include "enc.hpp"
#include "parallel.hpp"

// An AVX2 path for float32 samples (GCC/Clang on x86-64), chosen at run time; the build itself
// stays portable (no -march).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && \
    !defined(RECSKETCH_NO_MULTIVERSION)
#define RECSKETCH_HAVE_AVX2_PATH 1
#include <immintrin.h>
#else
#define RECSKETCH_HAVE_AVX2_PATH 0
#endif

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

// l1 norm, smallest and largest |v_k| of a block in one pass. Eight partial sums (entry k goes
// to lane k mod 8, the tail to lane 0) added in a fixed order: the AVX2 path below computes the
// very same float64 lanes, so both give the same bits.
// The part both paths share: entries [k, b) into lane 0, then the fixed-order reduction.
template <class T>
inline void block_stats_finish(const T* v, std::int64_t k, std::int64_t b, double* s, T mn, T mx,
                               double& l1, double& lo, double& hi) noexcept {
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

template <class T>
void block_stats_scalar(const T* v, std::int64_t b, double& l1, double& lo, double& hi) noexcept {
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
  block_stats_finish(v, k, b, s, mn, mx, l1, lo, hi);
}

#if RECSKETCH_HAVE_AVX2_PATH
__attribute__((target("avx2"))) inline void block_stats_avx2(const float* v, std::int64_t b,
                                                             double& l1, double& lo,
                                                             double& hi) noexcept {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  __m256 mn = _mm256_set1_ps(std::numeric_limits<float>::max()), mx = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + 8 <= b; k += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(v + k));
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    mn = _mm256_min_ps(mn, a);
    mx = _mm256_max_ps(mx, a);
  }
  alignas(32) double s[8];
  alignas(32) float lo8[8], hi8[8];
  _mm256_store_pd(s, s0);
  _mm256_store_pd(s + 4, s1);
  _mm256_store_ps(lo8, mn);
  _mm256_store_ps(hi8, mx);
  float mnv = lo8[0], mxv = hi8[0];
  for (int t = 1; t < 8; ++t) {
    mnv = lo8[t] < mnv ? lo8[t] : mnv;
    mxv = hi8[t] > mxv ? hi8[t] : mxv;
  }
  block_stats_finish(v, k, b, s, mnv, mxv, l1, lo, hi);
}

// Bits k of words[] set where v[k] < 0, for a whole block (b <= 192), eight entries at a time.
__attribute__((target("avx2"))) inline void sign_words_avx2(const float* v, std::int64_t b,
                                                            std::uint64_t* words) noexcept {
  words[0] = words[1] = words[2] = 0;
  const __m256 zero = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + 8 <= b; k += 8) {
    const auto m = static_cast<std::uint64_t>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + k), zero, _CMP_LT_OQ)));
    words[k >> 6] |= m << (k & 63);
    if ((k & 63) > 56) words[(k >> 6) + 1] |= m >> (64 - (k & 63));
  }
  for (; k < b; ++k)
    if (v[k] < 0.0f) words[k >> 6] |= std::uint64_t{1} << (k & 63);
}

// Bits [start, start + n) of a little-endian multi-word bit string, n <= 64.
inline std::uint64_t bit_field(const std::uint64_t* words, std::int64_t start,
                               std::int64_t n) noexcept {
  const std::int64_t w = start >> 6, off = start & 63;
  std::uint64_t x = words[w] >> off;
  if (off && off + n > 64) x |= words[w + 1] << (64 - off);
  return n == 64 ? x : (x & ((std::uint64_t{1} << n) - 1));
}
#endif

template <class T>
inline void block_stats(const T* v, std::int64_t b, double& l1, double& lo, double& hi,
                        bool avx2) noexcept {
#if RECSKETCH_HAVE_AVX2_PATH
  if constexpr (std::is_same_v<T, float>)
    if (avx2) return block_stats_avx2(v, b, l1, lo, hi);
#endif
  (void)avx2;
  block_stats_scalar(v, b, l1, lo, hi);
}

inline bool cpu_has_avx2() noexcept {
#if RECSKETCH_HAVE_AVX2_PATH
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

// Sign bits of v[0 .. n) (bit k set: v[k] < 0), n <= 64.
template <class T>
inline std::uint64_t sign_mask(const T* v, std::int64_t n) noexcept {
  std::uint64_t w = 0;
  for (std::int64_t k = 0; k < n; ++k) w |= static_cast<std::uint64_t>(v[k] < T(0)) << k;
  return w;
}

// Decodes a block from its three sub-blocks' sign bits (the rules are decode_enc_bits') and
// fills the record's column, sign and canonical keys. False for a block that is not a codeword.
inline bool decode_bits(std::uint64_t ms, std::uint64_t mc, std::uint64_t mm, std::int64_t third,
                        int L, std::int64_t d, BlockRecord& r) noexcept {
  const DecodedBlock dec = decode_enc_bits(mc, ms & 1, mm & 1, third, L, d);
  if (dec.status != BlockStatus::ok) return false;
  const std::uint64_t ones = third == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << third) - 1;
  r.column = dec.column;
  r.sign = dec.sign;
  r.string_key = (ms & 1) ? (ms ^ ones) : ms;
  r.signature_key = (mm & 1) ? (mm ^ ones) : mm;
  const std::uint64_t flip = dec.sign < 0 ? ones : 0;
  r.pattern[0] = ms ^ flip;
  r.pattern[1] = mc ^ flip;
  r.pattern[2] = mm ^ flip;
  return true;
}

template <class T>
bool scan_sample(const T* y, std::int64_t sample, const ScanParams& p,
                 std::vector<BlockRecord>& out) {
  const std::int64_t b = p.b, third = b / 3, n_blocks = p.d / b;
  const bool avx2 = cpu_has_avx2();
  for (std::int64_t blk = 0; blk < n_blocks; ++blk) {
    const T* v = y + blk * b;
    double l1, lo, hi;
    block_stats(v, b, l1, lo, hi, avx2);
    if (!std::isfinite(l1)) return false;
    if (!(l1 > 0.0)) continue;
    // max_k | |u_k| - 1 | with u = b v / |v|_1, from the extreme magnitudes alone
    const double inv = static_cast<double>(b) / l1;
    const double worst = std::max(hi * inv - 1.0, 1.0 - lo * inv);
    if (worst > p.tau) continue;
    BlockRecord r;
    std::uint64_t ms, mc, mm;
#if RECSKETCH_HAVE_AVX2_PATH
    if (std::is_same_v<T, float> && avx2) {
      std::uint64_t words[3];
      sign_words_avx2(reinterpret_cast<const float*>(v), b, words);
      ms = bit_field(words, 0, third);
      mc = bit_field(words, third, third);
      mm = bit_field(words, 2 * third, third);
    } else
#endif
    {
      ms = sign_mask(v, third);
      mc = sign_mask(v + third, third);
      mm = sign_mask(v + 2 * third, third);
    }
    if (!decode_bits(ms, mc, mm, third, p.index_bits, p.d, r)) continue;
    r.sample = sample;
    r.block = blk;
    r.closeness = worst;
    r.magnitude = l1 / static_cast<double>(b) / p.scale;
    out.push_back(r);
  }
  return true;
}

}  // namespace detail

// Scans the n rows of Y (n x d, row-major). Returns the records in parts whose concatenation
// is in (sample, block) order for any thread count. Throws std::invalid_argument if Y holds
// NaN or infinity (checked inside the scan: no separate pass over Y).
template <class T>
std::vector<std::vector<BlockRecord>> scan_blocks(const T* Y, std::int64_t n, const ScanParams& p,
                                                  std::int64_t first_sample, int num_threads) {
  if (p.b % 3 != 0 || p.b / 3 > 64 || p.d % p.b != 0)
    throw std::invalid_argument("block size must be a multiple of 3, at most 192, dividing d");
  constexpr std::int64_t kSamplesPerTask = 64;
  const std::int64_t tasks = (n + kSamplesPerTask - 1) / kSamplesPerTask;
  std::vector<std::vector<BlockRecord>> parts(static_cast<std::size_t>(tasks));
  std::vector<char> finite(static_cast<std::size_t>(tasks), 1);
  parallel_for(tasks, num_threads, [&](std::int64_t t) {
    const std::int64_t s1 = std::min(n, (t + 1) * kSamplesPerTask);
    auto& part = parts[static_cast<std::size_t>(t)];
    part.reserve(static_cast<std::size_t>(kSamplesPerTask * 8));
    for (std::int64_t s = t * kSamplesPerTask; s < s1; ++s)
      if (!detail::scan_sample(Y + s * p.d, first_sample + s, p, part)) {
        finite[static_cast<std::size_t>(t)] = 0;
        return;
      }
  });
  for (char f : finite)
    if (!f) throw std::invalid_argument("Y contains NaN or infinity");
  return parts;
}

}  // namespace recsketch
