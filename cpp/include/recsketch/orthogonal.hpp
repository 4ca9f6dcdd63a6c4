// The `orthogonal` family: R = H D3 H D2 H D1 with H the normalised Walsh-Hadamard transform
// (H H = I, H = H^T) and D1..D3 seeded random sign diagonals. R is exactly orthonormal (up to
// rounding), costs O(d log d) per product and is stored as nothing but (d, seed, key): the signs
// are regenerated for every product (3 d / 64 words, negligible next to the transforms).
// R^T = D1 H D2 H D3 H. d must be a power of two.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "recsketch/parallel.hpp"
#include "recsketch/rng.hpp"
#include "recsketch/wht.hpp"

namespace recsketch {

inline void validate_orthogonal(std::int64_t d) {
  if (d < 2 || d > (std::int64_t{1} << 30) || (d & (d - 1)) != 0)
    throw std::invalid_argument("the orthogonal family needs d_sketch a power of two in [2, 2^30], got " +
                                std::to_string(d));
}

class OrthogonalMatrix {
 public:
  OrthogonalMatrix(std::int64_t d, std::uint64_t seed, std::uint64_t key)
      : d_(d), seed_(seed), key_(key) {
    validate_orthogonal(d);
    inv_sqrt_d_ = 1.0 / std::sqrt(static_cast<double>(d));
  }
  std::int64_t d() const noexcept { return d_; }
  std::uint64_t seed() const noexcept { return seed_; }
  std::uint64_t key() const noexcept { return key_; }

  // Sign bits of D_round (round = 1, 2, 3) into words[0 .. d/64 rounded up).
  void sign_bits(int round, std::uint64_t* words) const noexcept {
    stream_bits(stream_state(seed_, key_, Stream::orthogonal_signs, static_cast<std::uint64_t>(round)),
                static_cast<std::size_t>(d_), words);
  }

  // The three sign diagonals, for apply_inplace: generate them once for a batch.
  struct Signs {
    std::vector<std::uint64_t> s1, s2, s3;
  };
  Signs signs() const {
    Signs s{std::vector<std::uint64_t>(words()), std::vector<std::uint64_t>(words()),
            std::vector<std::uint64_t>(words())};
    sign_bits(1, s.s1.data());
    sign_bits(2, s.s2.data());
    sign_bits(3, s.s3.data());
    return s;
  }

  // v <- R v (transpose = false) or R^T v, in place; v has d entries. Each sign diagonal after
  // the first scales by 1/sqrt(d) as it applies its signs, so H is normalised; the diagonals
  // run inside the transforms' first and last passes (wht.hpp).
  void apply_inplace(double* v, bool transpose, const Signs& s) const noexcept {
    const double c = inv_sqrt_d_;
    if (!transpose) {
      wht(v, d_, SignedScale{s.s1.data(), 1.0}, SignedScale{});
      wht(v, d_, SignedScale{s.s2.data(), c}, SignedScale{});
      wht(v, d_, SignedScale{s.s3.data(), c}, SignedScale{nullptr, c});
    } else {
      wht(v, d_, SignedScale{}, SignedScale{});
      wht(v, d_, SignedScale{s.s3.data(), c}, SignedScale{});
      wht(v, d_, SignedScale{s.s2.data(), c}, SignedScale{s.s1.data(), c});
    }
  }
  void apply_inplace(double* v, bool transpose) const { apply_inplace(v, transpose, signs()); }

 private:
  std::size_t words() const noexcept { return static_cast<std::size_t>((d_ + 63) / 64); }
  std::int64_t d_;
  std::uint64_t seed_, key_;
  double inv_sqrt_d_ = 0.0;
};

// out = R x, R^T x, or their half versions (x + R x)/2, for the n rows of x (n x m row-major,
// m <= d, missing columns are zero; transpose and half need m == d). Vectors run in parallel;
// each is transformed alone, so results do not depend on the thread count.
template <class T>
void orthogonal_apply(const OrthogonalMatrix& R, const T* x, std::int64_t n, std::int64_t m, T* out,
                      bool transpose, bool half, int num_threads) {
  const std::int64_t d = R.d();
  if (n <= 0) return;
  const OrthogonalMatrix::Signs signs = R.signs();
  // Vectors in tasks of up to 16 (a thread reuses one work vector for a task), at least four
  // tasks per thread when there are enough vectors. Each vector is transformed alone: the
  // grouping changes no bit.
  const std::int64_t threads = resolve_threads(num_threads);
  const std::int64_t per_task = std::max<std::int64_t>(
      1, std::min<std::int64_t>(16, n / (4 * threads)));
  parallel_for((n + per_task - 1) / per_task, num_threads, [&](std::int64_t task) {
    std::vector<double> v(static_cast<std::size_t>(d));
    const std::int64_t i1 = std::min(n, (task + 1) * per_task);
    for (std::int64_t i = task * per_task; i < i1; ++i) {
      const T* row = x + i * m;
      for (std::int64_t k = 0; k < m; ++k) v[static_cast<std::size_t>(k)] = static_cast<double>(row[k]);
      std::fill(v.begin() + m, v.end(), 0.0);
      R.apply_inplace(v.data(), transpose, signs);
      T* o = out + i * d;
      if (half)
        for (std::int64_t k = 0; k < d; ++k)
          o[k] = static_cast<T>(0.5 * (static_cast<double>(row[k]) + v[static_cast<std::size_t>(k)]));
      else
        for (std::int64_t k = 0; k < d; ++k) o[k] = static_cast<T>(v[static_cast<std::size_t>(k)]);
    }
  });
}

// Bytes orthogonal_apply allocates besides its output for n vectors: the three sign diagonals
// and one d-vector per running task (the bindings check it with the output against the
// allocation limit).
inline std::uint64_t orthogonal_scratch_bytes(std::int64_t d, std::int64_t n, int num_threads) {
  const auto running = static_cast<std::uint64_t>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(resolve_threads(num_threads), n)));
  return 3 * static_cast<std::uint64_t>((d + 63) / 64) * 8 +
         running * static_cast<std::uint64_t>(d) * sizeof(double);
}

}  // namespace recsketch
