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

namespace recsketch {

inline void validate_orthogonal(std::int64_t d) {
  if (d < 2 || d > (std::int64_t{1} << 30) || (d & (d - 1)) != 0)
    throw std::invalid_argument("the orthogonal family needs d_sketch a power of two in [2, 2^30], got " +
                                std::to_string(d));
}

// In-place unnormalised fast Walsh-Hadamard transform, fixed order of operations.
inline void fwht(double* v, std::int64_t d) noexcept {
  for (std::int64_t h = 1; h < d; h <<= 1)
    for (std::int64_t i = 0; i < d; i += 2 * h)
      for (std::int64_t k = i; k < i + h; ++k) {
        const double a = v[k], c = v[k + h];
        v[k] = a + c;
        v[k + h] = a - c;
      }
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

  // v <- R v (transpose = false) or R^T v, in place; v has d entries.
  void apply_inplace(double* v, bool transpose) const {
    std::vector<std::uint64_t> s1(words()), s2(words()), s3(words());
    sign_bits(1, s1.data());
    sign_bits(2, s2.data());
    sign_bits(3, s3.data());
    // Each step scales by 1/sqrt(d) together with the sign it applies, so H is normalised.
    auto signs = [&](const std::vector<std::uint64_t>& s, double scale) {
      for (std::int64_t k = 0; k < d_; ++k)
        v[k] *= bit_at(s.data(), static_cast<std::size_t>(k)) ? -scale : scale;
    };
    if (!transpose) {
      signs(s1, 1.0);
      fwht(v, d_);
      signs(s2, inv_sqrt_d_);
      fwht(v, d_);
      signs(s3, inv_sqrt_d_);
      fwht(v, d_);
      signs_none(v, inv_sqrt_d_);
    } else {
      fwht(v, d_);
      signs(s3, inv_sqrt_d_);
      fwht(v, d_);
      signs(s2, inv_sqrt_d_);
      fwht(v, d_);
      signs(s1, inv_sqrt_d_);
    }
  }

 private:
  std::size_t words() const noexcept { return static_cast<std::size_t>((d_ + 63) / 64); }
  void signs_none(double* v, double scale) const noexcept {
    for (std::int64_t k = 0; k < d_; ++k) v[k] *= scale;
  }
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
  parallel_for(n, num_threads, [&](std::int64_t i) {
    std::vector<double> v(static_cast<std::size_t>(d), 0.0);
    const T* row = x + i * m;
    for (std::int64_t k = 0; k < m; ++k) v[static_cast<std::size_t>(k)] = static_cast<double>(row[k]);
    R.apply_inplace(v.data(), transpose);
    T* o = out + i * d;
    for (std::int64_t k = 0; k < d; ++k) {
      const double rv = v[static_cast<std::size_t>(k)];
      o[k] = static_cast<T>(half ? 0.5 * (static_cast<double>(row[k]) + rv) : rv);
    }
  });
}

}  // namespace recsketch
