// The block-sparse family D(b, q, d) of Section 4.3 (Algorithm 2), generated from a seed.
//
// Design notes
// - A matrix is (family, seed, key) plus its matrix signature sigma_m: a few hundred bytes. Every
//   column is regenerated on demand from counter-based streams (rng.hpp), so thousands of
//   matrices cost almost no memory and any column can be produced by any thread.
// - Column j of Algorithm 2 draws, per block i, a Bernoulli(q) mask bit eta_{i,j} and three
//   Rademacher flips. We draw the mask as geometric gaps between nonzero blocks: word k of the
//   column's block-walk stream gives the gap (its low 32 bits against a threshold table) and the
//   flips of the block it lands on (bits 32, 33, 34 for f_s, f_c, f_m; a set bit means -1).
//   Gaps of a Bernoulli(q) sequence are iid Geometric(q), so the mask has exactly the law of
//   Algorithm 2 up to the 2^-32 quantisation of the thresholds, at a cost of one word per
//   nonzero block instead of one per block.
// - The thresholds are products (1-q)^k computed by repeated IEEE multiplication, which is
//   correctly rounded everywhere: the table, hence the matrix, is identical on every machine.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "recsketch/block_sparse_params.hpp"
#include "recsketch/rng.hpp"

namespace recsketch {

// Parameters and tables shared by every matrix of one Sketcher.
class BlockSparseFamily {
 public:
  BlockSparseFamily(std::int64_t d, std::int64_t b, double q) : d_(d), b_(b), q_(q) {
    validate_block_sparse(d, b, q);
    index_bits_ = ceil_log2(d);
    scale_ = 1.0 / std::sqrt(static_cast<double>(d) * q);
    // thresholds_[k-1] = floor(2^32 (1-q)^k): P(gap >= k) = thresholds_[k-1] / 2^32. A gap of
    // n_blocks() or more ends any column, so the table stops there (or where it reaches 0).
    const double keep = 1.0 - q;
    double tail = 1.0;
    for (std::int64_t k = 1; k <= n_blocks(); ++k) {
      tail *= keep;
      const double t = std::floor(tail * 4294967296.0);
      if (t < 1.0) break;
      thresholds_.push_back(static_cast<std::uint32_t>(t));
    }
    // The gap is non-increasing in u, so the gaps at the two ends of each of the 4096 buckets of
    // the top 12 bits of u bound the search; most buckets hold a single gap value.
    buckets_.resize(kBuckets);
    for (std::uint32_t h = 0; h < kBuckets; ++h) {
      const std::size_t hi = search(h << kBucketShift, 0, thresholds_.size());
      const std::size_t lo =
          search((h << kBucketShift) | ((1U << kBucketShift) - 1), 0, thresholds_.size());
      buckets_[h] = static_cast<std::uint64_t>(lo) | (static_cast<std::uint64_t>(hi) << 32);
    }
  }

  std::int64_t d() const noexcept { return d_; }
  std::int64_t block_size() const noexcept { return b_; }
  double density() const noexcept { return q_; }
  std::int64_t third() const noexcept { return b_ / 3; }
  std::int64_t n_blocks() const noexcept { return d_ / b_; }
  int index_bits() const noexcept { return index_bits_; }
  // |entry| of every nonzero: 1 / sqrt(d q).
  double scale() const noexcept { return scale_; }

  // Zero blocks to skip before the next nonzero one, for a uniform 32-bit word u.
  std::int64_t gap(std::uint32_t u) const noexcept {
    const std::uint32_t h = u >> kBucketShift;
    const std::uint64_t range = buckets_[h];
    const std::uint32_t lo = static_cast<std::uint32_t>(range), hi = static_cast<std::uint32_t>(range >> 32);
    if (lo == hi) return lo;
    return static_cast<std::int64_t>(search(u, lo, hi));
  }

 private:
  static constexpr std::uint32_t kBucketShift = 20;
  static constexpr std::uint32_t kBuckets = 1U << (32 - kBucketShift);

  // Number of thresholds greater than u (thresholds_ is decreasing), knowing it is in [lo, hi].
  std::size_t search(std::uint32_t u, std::size_t lo, std::size_t hi) const noexcept {
    const auto first = thresholds_.begin() + static_cast<std::ptrdiff_t>(lo);
    const auto last = thresholds_.begin() + static_cast<std::ptrdiff_t>(hi);
    return static_cast<std::size_t>(
        std::partition_point(first, last, [u](std::uint32_t t) { return u < t; }) -
        thresholds_.begin());
  }

  std::int64_t d_, b_;
  double q_;
  int index_bits_ = 0;
  double scale_ = 0.0;
  std::vector<std::uint32_t> thresholds_;
  std::vector<std::uint64_t> buckets_;  // (lowest gap) | (highest gap) << 32 per bucket
};

// One nonzero block of a column: its block-row index and flips (true means -1).
struct BlockFlips {
  std::int64_t block;
  bool neg_s, neg_c, neg_m;
};

class BlockSparseMatrix {
 public:
  BlockSparseMatrix(std::shared_ptr<const BlockSparseFamily> family, std::uint64_t seed,
                    std::uint64_t key)
      : family_(std::move(family)),
        seed_(seed),
        key_(key),
        string_prefix_(stream_prefix(seed, key, Stream::random_string)),
        walk_prefix_(stream_prefix(seed, key, Stream::block_walk)) {
    signature_.resize(static_cast<std::size_t>((family_->third() + 63) / 64));
    stream_bits(stream_state(seed_, key_, Stream::matrix_signature, 0),
                static_cast<std::size_t>(family_->third()), signature_.data());
  }

  const BlockSparseFamily& family() const noexcept { return *family_; }
  std::uint64_t seed() const noexcept { return seed_; }
  std::uint64_t key() const noexcept { return key_; }

  // sigma_m's sign bits (bit r set: entry r is negative).
  const std::uint64_t* signature_bits() const noexcept { return signature_.data(); }

  // sigma_{s,j}'s sign bits into words[0 .. ceil(third/64)).
  void random_string_bits(std::int64_t j, std::uint64_t* words) const noexcept {
    stream_bits(stream_state(string_prefix_, static_cast<std::uint64_t>(j)),
                static_cast<std::size_t>(family_->third()), words);
  }

  // Calls body(BlockFlips) for the nonzero blocks of column j, in increasing block order.
  template <class Body>
  void walk_column(std::int64_t j, Body&& body) const {
    const std::uint64_t state = stream_state(walk_prefix_, static_cast<std::uint64_t>(j));
    const std::int64_t n_blocks = family_->n_blocks();
    std::int64_t block = 0;
    for (std::uint64_t k = 0;; ++k) {
      const std::uint64_t w = stream_word(state, k);
      block += family_->gap(static_cast<std::uint32_t>(w));
      if (block >= n_blocks) return;
      body(BlockFlips{block, ((w >> 32) & 1U) != 0, ((w >> 33) & 1U) != 0,
                      ((w >> 34) & 1U) != 0});
      ++block;
    }
  }

 private:
  std::shared_ptr<const BlockSparseFamily> family_;
  std::uint64_t seed_, key_;
  std::uint64_t string_prefix_, walk_prefix_;  // stream_prefix of the per-column streams
  std::vector<std::uint64_t> signature_;
};

}  // namespace recsketch
