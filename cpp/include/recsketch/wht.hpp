// The fast Walsh-Hadamard transform of the `orthogonal` family, with a diagonal of signed
// scales fused before and after it: v <- post (.) H (pre (.) v), H unnormalised.
//
// Design notes
// - Same bits on every path. H is computed as the textbook butterfly network: level h (h = 1, 2,
//   4, ..., d/2) replaces (v[k], v[k+h]) by (v[k] + v[k+h], v[k] - v[k+h]). Any schedule that
//   runs the levels of each element in this order computes the same operations on the same
//   operands, so the portable loop and the AVX2 kernel below give identical results: the AVX2
//   kernel only changes the schedule (which butterflies run together, in which cache pass).
//   The in-register levels 1 and 2 compute a[k+h] + a[k] and a[k] + (-a[k+h]), which are
//   a[k] + a[k+h] and a[k] - a[k+h] exactly (IEEE addition is commutative, negation exact).
//   No FMA anywhere (-ffp-contract=off; the AVX2 kernel uses no FMA intrinsic).
// - The diagonals are applied as v[k] * (+-scale), as the scalar code always did, fused into the
//   first pass (pre) and the last pass (post) instead of two extra sweeps over v.
// - Working precision is double for every input type, as before this kernel: the bits of every
//   existing orthogonal sketch stay the same, and the float64 Sketcher keeps full precision
//   through 3 log2(d) levels. Float32 work would give twice the lanes per register, load and
//   store, so at most twice the rate, at the price of changing every sketch (docs/kernels.md).
// - Schedule (AVX2): a first pass does the levels h = 1, 2, 4, 8 on 16 consecutive entries in four
//   registers, multiplying by `pre` as it loads. Blocks of kWhtBlock entries (32 KiB, in L1)
//   then run the levels below the block size three at a time (radix 8: eight registers, three
//   levels, one load and one store per entry), or two; the levels at and above the block size
//   run the same way over the whole vector (in L2 up to d = 2^16). The last pass multiplies by
//   `post` before it stores. Measured alone (one core, d = 4096) this runs at about 45% of the
//   core's double add rate: the passes are bound by loads and stores as much as by adds.
// - Path choice: AVX2 when the CPU has it (checked once, at run time: no -march=native), the
//   portable loop otherwise. set_wht_path() forces one (tests compare them bit for bit).
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(RECSKETCH_NO_AVX2_WHT)
#define RECSKETCH_WHT_AVX2 1
#include <immintrin.h>
#else
#define RECSKETCH_WHT_AVX2 0
#endif

namespace recsketch {

// A diagonal of signed scales: entry k is -scale if bit k of `bits` is set, else scale
// (bits == nullptr: every entry is scale).
struct SignedScale {
  const std::uint64_t* bits = nullptr;
  double scale = 1.0;

  double at(std::int64_t k) const noexcept {
    return bits && ((bits[k >> 6] >> (k & 63)) & 1U) ? -scale : scale;
  }
  bool identity() const noexcept { return bits == nullptr && scale == 1.0; }
};

enum class WhtPath : int { automatic = 0, portable = 1, avx2 = 2 };

namespace detail {

inline std::atomic<int>& wht_path_override() noexcept {
  static std::atomic<int> path{static_cast<int>(WhtPath::automatic)};
  return path;
}

inline bool cpu_has_avx2() noexcept {
#if RECSKETCH_WHT_AVX2
  static const bool has = __builtin_cpu_supports("avx2") != 0;
  return has;
#else
  return false;
#endif
}

// Entries per cache block of the AVX2 schedule: 32 KiB of doubles, within every x86 L1d.
inline constexpr std::int64_t kWhtBlock = 4096;

// The portable path: the butterfly network level by level, levels below kWhtBlock block by
// block (the same butterflies in the same per-entry order as the AVX2 kernel).
inline void wht_portable(double* v, std::int64_t d, SignedScale pre, SignedScale post) noexcept {
  if (!pre.identity())
    for (std::int64_t k = 0; k < d; ++k) v[k] *= pre.at(k);
  const std::int64_t block = d < kWhtBlock ? d : kWhtBlock;
  auto level = [](double* w, std::int64_t n, std::int64_t h) {
    for (std::int64_t i = 0; i < n; i += 2 * h)
      for (std::int64_t k = i; k < i + h; ++k) {
        const double a = w[k], c = w[k + h];
        w[k] = a + c;
        w[k + h] = a - c;
      }
  };
  for (std::int64_t b0 = 0; b0 < d; b0 += block)
    for (std::int64_t h = 1; h < block; h <<= 1) level(v + b0, block, h);
  for (std::int64_t h = block; h < d; h <<= 1) level(v, d, h);
  if (!post.identity())
    for (std::int64_t k = 0; k < d; ++k) v[k] *= post.at(k);
}

#if RECSKETCH_WHT_AVX2

// The 16 patterns of four signed scales, indexed by four sign bits (bit i: lane i negative).
struct SignTable {
  alignas(32) double rows[16][4];
  const std::uint64_t* bits;

  explicit SignTable(SignedScale s) noexcept : bits(s.bits) {
    for (int p = 0; p < 16; ++p)
      for (int i = 0; i < 4; ++i) rows[p][i] = ((p >> i) & 1) ? -s.scale : s.scale;
  }
  // Row for entries k .. k+3 (k a multiple of 4).
  const double* at(std::int64_t k) const noexcept {
    const unsigned p = bits ? static_cast<unsigned>((bits[k >> 6] >> (k & 63)) & 15U) : 0U;
    return rows[p];
  }
};

#define RECSKETCH_AVX2 __attribute__((target("avx2")))

// Levels h = 1, 2, 4, 8 on the 16 entries at p (entries k .. k+15 of the vector), times `pre`
// on load and (if post) times `post` on store.
RECSKETCH_AVX2 inline void wht_pass16(double* p, std::int64_t k, const SignTable& pre,
                                      const SignTable* post) noexcept {
  const __m256d neg_odd = _mm256_setr_pd(0.0, -0.0, 0.0, -0.0);
  const __m256d neg_high = _mm256_setr_pd(0.0, 0.0, -0.0, -0.0);
  __m256d r[4];
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_mul_pd(_mm256_loadu_pd(p + 4 * i), _mm256_load_pd(pre.at(k + 4 * i)));
    // Level 1: lanes (a1 + a0, a0 + -a1, a3 + a2, a2 + -a3).
    const __m256d s1 = _mm256_permute_pd(r[i], 0x5);
    r[i] = _mm256_add_pd(s1, _mm256_xor_pd(r[i], neg_odd));
    // Level 2: lanes (a2 + a0, a3 + a1, a0 + -a2, a1 + -a3).
    const __m256d s2 = _mm256_permute2f128_pd(r[i], r[i], 0x01);
    r[i] = _mm256_add_pd(s2, _mm256_xor_pd(r[i], neg_high));
  }
  // Levels 4 and 8 across the registers.
  const __m256d a0 = _mm256_add_pd(r[0], r[1]), a1 = _mm256_sub_pd(r[0], r[1]);
  const __m256d a2 = _mm256_add_pd(r[2], r[3]), a3 = _mm256_sub_pd(r[2], r[3]);
  __m256d o[4] = {_mm256_add_pd(a0, a2), _mm256_add_pd(a1, a3), _mm256_sub_pd(a0, a2),
                  _mm256_sub_pd(a1, a3)};
  for (int i = 0; i < 4; ++i) {
    if (post) o[i] = _mm256_mul_pd(o[i], _mm256_load_pd(post->at(k + 4 * i)));
    _mm256_storeu_pd(p + 4 * i, o[i]);
  }
}

// Levels h, 2h, ... up to (R/2) h (radix R: 2, 4 or 8) on the n entries at v (h >= 4, R h
// divides n), each entry loaded and stored once for all of them; `offset` is the index of v[0]
// in the whole vector (for the post signs).
template <int R>
RECSKETCH_AVX2 inline void wht_radix(double* v, std::int64_t n, std::int64_t h,
                                     std::int64_t offset, const SignTable* post) noexcept {
  for (std::int64_t i = 0; i < n; i += R * h)
    for (std::int64_t k = i; k < i + h; k += 4) {
      double* p = v + k;
      __m256d x[R];
      for (int t = 0; t < R; ++t) x[t] = _mm256_loadu_pd(p + t * h);
      for (int step = 1; step < R; step <<= 1)  // level step * h: registers t and t + step
        for (int t = 0; t < R; ++t)
          if ((t & step) == 0) {
            const __m256d a = x[t], b = x[t + step];
            x[t] = _mm256_add_pd(a, b);
            x[t + step] = _mm256_sub_pd(a, b);
          }
      for (int t = 0; t < R; ++t) {
        if (post) x[t] = _mm256_mul_pd(x[t], _mm256_load_pd(post->at(offset + k + t * h)));
        _mm256_storeu_pd(p + t * h, x[t]);
      }
    }
}

// Levels h_from, 2 h_from, ... below h_to on the n entries at v, three at a time where they
// can (radix 8 loads and stores each entry once per three levels), else two or one; the last
// pass applies post (if not null).
RECSKETCH_AVX2 inline void wht_levels(double* v, std::int64_t n, std::int64_t h_from,
                                      std::int64_t h_to, std::int64_t offset,
                                      const SignTable* post) noexcept {
  int left = 0;
  for (std::int64_t t = h_from; t < h_to; t <<= 1) ++left;
  std::int64_t h = h_from;
  while (left > 0) {
    // Four levels as two radix-4 passes rather than radix 8 and a lone radix-2 pass (half
    // the adds per load and store); a radix-2 pass only when one level is all there is.
    const int take = (left == 1) ? 1 : (left == 2 || left == 4) ? 2 : 3;
    const SignTable* p = (take == left) ? post : nullptr;
    if (take == 3)
      wht_radix<8>(v, n, h, offset, p);
    else if (take == 2)
      wht_radix<4>(v, n, h, offset, p);
    else
      wht_radix<2>(v, n, h, offset, p);
    h <<= take;
    left -= take;
  }
}

// d >= 16.
RECSKETCH_AVX2 inline void wht_avx2(double* v, std::int64_t d, SignedScale pre,
                                    SignedScale post) noexcept {
  const SignTable pre_t(pre), post_t(post);
  const SignTable* post_p = post.identity() ? nullptr : &post_t;
  const std::int64_t block = d < kWhtBlock ? d : kWhtBlock;
  const bool global = block < d;  // levels >= block remain after the blocks
  for (std::int64_t b0 = 0; b0 < d; b0 += block) {
    const bool last_here = !global && block == 16;
    for (std::int64_t k = b0; k < b0 + block; k += 16)
      wht_pass16(v + k, k, pre_t, last_here ? post_p : nullptr);
    if (block > 16) wht_levels(v + b0, block, 16, block, b0, global ? nullptr : post_p);
  }
  if (global) wht_levels(v, d, block, d, 0, post_p);
}

// The yardstick for the benchmarks: 12 independent chains of 4-lane double adds (enough to
// cover the add latency on two ports), `rounds` adds per chain. Returns the sum so that the
// work is kept; the caller times it: 48 * rounds double adds.
RECSKETCH_AVX2 inline double add_rate_probe_avx2(std::int64_t rounds) noexcept {
  __m256d acc[12];
  for (int i = 0; i < 12; ++i)  // lanes start at 0 .. 47, as in the scalar probe
    acc[i] = _mm256_setr_pd(4.0 * i, 4.0 * i + 1, 4.0 * i + 2, 4.0 * i + 3);
  const __m256d step = _mm256_set1_pd(1e-9);
  for (std::int64_t r = 0; r < rounds; ++r)
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_add_pd(acc[i], step);
  __m256d total = acc[0];
  for (int i = 1; i < 12; ++i) total = _mm256_add_pd(total, acc[i]);
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, total);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

#undef RECSKETCH_AVX2
#endif  // RECSKETCH_WHT_AVX2

}  // namespace detail

// The path wht() takes now: the forced one, else AVX2 when the CPU has it.
inline WhtPath wht_path() noexcept {
  const auto forced = static_cast<WhtPath>(detail::wht_path_override().load());
  if (forced != WhtPath::automatic) return forced;
  return detail::cpu_has_avx2() ? WhtPath::avx2 : WhtPath::portable;
}

// Forces a path for every later wht() in the process (automatic: back to the CPU's best).
// For tests and benchmarks; throws std::invalid_argument if AVX2 is asked for and absent.
inline void set_wht_path(WhtPath path) {
  if (path == WhtPath::avx2 && !detail::cpu_has_avx2())
    throw std::invalid_argument("this CPU (or build) has no AVX2 Walsh-Hadamard kernel");
  detail::wht_path_override().store(static_cast<int>(path));
}

// v <- post (.) H (pre (.) v) for the unnormalised Walsh-Hadamard H; d a power of two.
inline void wht(double* v, std::int64_t d, SignedScale pre, SignedScale post) noexcept {
#if RECSKETCH_WHT_AVX2
  if (d >= 16 && wht_path() == WhtPath::avx2) {
    detail::wht_avx2(v, d, pre, post);
    return;
  }
#endif
  detail::wht_portable(v, d, pre, post);
}

// Runs 48 * rounds double adds at the widest rate the WHT kernel could use (AVX2 if present,
// else scalar in 12 chains): time it to get the machine's SIMD add rate, the bound the
// benchmarks compare the transform with. Returns a value that depends on every add.
inline double add_rate_probe(std::int64_t rounds) noexcept {
#if RECSKETCH_WHT_AVX2
  if (detail::cpu_has_avx2()) return detail::add_rate_probe_avx2(rounds);
#endif
  double acc[48];
  for (int i = 0; i < 48; ++i) acc[i] = static_cast<double>(i);
  for (std::int64_t r = 0; r < rounds; ++r)
    for (int i = 0; i < 48; ++i) acc[i] += 1e-9;
  double total = 0.0;
  for (int i = 0; i < 48; ++i) total += acc[i];
  return total;
}

}  // namespace recsketch
