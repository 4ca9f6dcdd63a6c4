// A bounded cache of block walks: for each column of a block-sparse matrix, its nonzero blocks
// and their flips, in block order, exactly as BlockSparseMatrix::walk_column produces them.
//
// Design notes
// - A walk costs one hash per nonzero block; a product then adds one SIMD row per block. For a
//   matrix used in many full products (the position matrices R_1, R_2 of every sketch, a
//   benchmark's matrix) the walk is a third of the work, and caching it costs about 1% of the
//   same matrix in CSR.
// - Only full products of mostly nonzero vectors fill the cache: a product walks only the
//   columns where its input is nonzero, so short attribute products and sparse inputs would pay
//   a whole walk for a few columns (and a repository of thousands of matrices used once must
//   not grow it). Entries are evicted least recently used first, so resident state never
//   exceeds the limit (default 64 MiB; 0 turns the cache off). The state is 4 bytes per
//   nonzero block plus 8 per column: 2.4 MB at d = 16,371 with the default density.
// - The cached walk is the walk, so cached and uncached products are the same sums in the same
//   order: bits do not depend on the cache.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "recsketch/block_sparse.hpp"
#include "recsketch/parallel.hpp"

namespace recsketch {

// Column j's walk is entries[offsets[j] .. offsets[j+1]); an entry is block << 3 | flips with
// flips = 4 neg_s + 2 neg_c + neg_m.
struct ColumnWalks {
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint32_t> entries;

  std::size_t bytes() const noexcept {
    return offsets.size() * sizeof(std::uint64_t) + entries.size() * sizeof(std::uint32_t);
  }

  static std::uint32_t encode(const BlockFlips& fl) noexcept {
    return static_cast<std::uint32_t>(fl.block) << 3 |
           static_cast<std::uint32_t>(fl.neg_s * 4 + fl.neg_c * 2 + fl.neg_m);
  }

  static BlockFlips decode(std::uint32_t entry) noexcept {
    return BlockFlips{static_cast<std::int64_t>(entry >> 3), (entry & 4U) != 0, (entry & 2U) != 0,
                      (entry & 1U) != 0};
  }

  static ColumnWalks build(const BlockSparseMatrix& R, int num_threads) {
    const std::int64_t d = R.family().d();
    constexpr std::int64_t kColumnsPerTask = 512;
    const std::int64_t tasks = (d + kColumnsPerTask - 1) / kColumnsPerTask;
    std::vector<std::vector<std::uint32_t>> parts(static_cast<std::size_t>(tasks));
    ColumnWalks w;
    w.offsets.assign(static_cast<std::size_t>(d + 1), 0);
    parallel_for(tasks, num_threads, [&](std::int64_t t) {
      auto& part = parts[static_cast<std::size_t>(t)];
      const std::int64_t j1 = std::min(d, (t + 1) * kColumnsPerTask);
      for (std::int64_t j = t * kColumnsPerTask; j < j1; ++j) {
        R.walk_column(j, [&](const BlockFlips& fl) { part.push_back(encode(fl)); });
        w.offsets[static_cast<std::size_t>(j + 1)] = part.size();  // within the task, for now
      }
    });
    std::uint64_t base = 0;
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t j1 = std::min(d, (t + 1) * kColumnsPerTask);
      for (std::int64_t j = t * kColumnsPerTask; j < j1; ++j) w.offsets[static_cast<std::size_t>(j + 1)] += base;
      base += parts[static_cast<std::size_t>(t)].size();
    }
    w.entries.resize(static_cast<std::size_t>(base));
    parallel_for(tasks, num_threads, [&](std::int64_t t) {
      const auto& part = parts[static_cast<std::size_t>(t)];
      if (!part.empty())
        std::memcpy(w.entries.data() + w.offsets[static_cast<std::size_t>(t * kColumnsPerTask)],
                    part.data(), part.size() * sizeof(std::uint32_t));
    });
    return w;
  }
};

class WalkCache {
 public:
  static WalkCache& global() {
    static WalkCache cache;
    return cache;
  }

  // The matrix's walks, from the cache or, if `build`, built now (and cached if they fit the
  // limit); nullptr if the cache is off, if not cached and not `build`, or if the walks alone
  // exceed the limit. Two threads missing at once both build (same walks; one is kept).
  std::shared_ptr<const ColumnWalks> get(const BlockSparseMatrix& R, int num_threads,
                                         bool build = true) {
    const Key key = key_of(R);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (limit_ == 0) return nullptr;
      auto it = index_.find(key);
      if (it != index_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        ++hits_;
        return it->second->second;
      }
      ++misses_;
      if (!build || estimate_bytes(R) > limit_) return nullptr;
    }
    auto walks = std::make_shared<const ColumnWalks>(ColumnWalks::build(R, num_threads));
    std::lock_guard<std::mutex> lock(mutex_);
    if (index_.count(key) != 0 || walks->bytes() > limit_) return walks;
    lru_.emplace_front(key, walks);
    index_[key] = lru_.begin();
    bytes_ += walks->bytes();
    evict_locked();
    return walks;
  }

  void set_limit(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    evict_locked();
  }

  struct Info {
    std::size_t bytes, limit, matrices;
    std::uint64_t hits, misses;
  };
  Info info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return Info{bytes_, limit_, lru_.size(), hits_, misses_};
  }

  // Empties the cache and resets its counters.
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    lru_.clear();
    index_.clear();
    bytes_ = 0;
    hits_ = misses_ = 0;
  }

  static constexpr std::size_t kDefaultLimit = std::size_t{64} << 20;

 private:
  // (d, b, bits of q, seed, key): everything the walks depend on.
  using Key = std::tuple<std::int64_t, std::int64_t, std::uint64_t, std::uint64_t, std::uint64_t>;
  using Entry = std::pair<Key, std::shared_ptr<const ColumnWalks>>;

  static Key key_of(const BlockSparseMatrix& R) {
    const double q = R.family().density();
    std::uint64_t q_bits;
    std::memcpy(&q_bits, &q, sizeof q_bits);
    return Key{R.family().d(), R.family().block_size(), q_bits, R.seed(), R.key()};
  }

  static std::size_t estimate_bytes(const BlockSparseMatrix& R) {
    const BlockSparseFamily& f = R.family();
    const double blocks = static_cast<double>(f.d()) * static_cast<double>(f.n_blocks()) * f.density();
    return static_cast<std::size_t>(blocks * sizeof(std::uint32_t)) +
           static_cast<std::size_t>(f.d() + 1) * sizeof(std::uint64_t);
  }

  void evict_locked() {
    while (bytes_ > limit_ && !lru_.empty()) {
      bytes_ -= lru_.back().second->bytes();
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
  }

  std::mutex mutex_;
  std::list<Entry> lru_;
  std::map<Key, std::list<Entry>::iterator> index_;
  std::size_t bytes_ = 0, limit_ = kDefaultLimit;
  std::uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace recsketch
