// A bounded cache of block walks: for each column of a block-sparse matrix, its nonzero blocks
// and their flips, in block order, exactly as BlockSparseMatrix::walk_column produces them.
//
// Design notes
// - A walk costs one hash per nonzero block; a product then adds one SIMD row per block. For a
//   matrix used in many full products (the position matrices R_1, R_2 of every sketch, a
//   benchmark's matrix) the walk is a third of the work, and caching it costs under 1% of the
//   same matrix in CSR.
// - Only full products of mostly nonzero vectors fill the cache: a product walks only the
//   columns where its input is nonzero, so short attribute products and sparse inputs would pay
//   a whole walk for a few columns (and a repository of thousands of matrices used once must
//   not grow it). Entries are evicted least recently used first, so resident state never
//   exceeds the limit (default 64 MiB, set_walk_cache_limit; 0 turns the cache off). The state
//   is 2 bytes per nonzero block (4 above 8192 block-rows) plus 8 per column: 1.3 MB at
//   d = 16,371 with the default density, so the default holds about 50 such matrices (or 370
//   at d = 4,095).
// - A matrix's first full product fills the cache as it runs: it records the walks it generates
//   column by column and offers them to the cache afterwards (block_sparse_forward), with no
//   separate build and no copy.
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

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "recsketch/block_sparse.hpp"
#include "recsketch/parallel.hpp"

namespace recsketch {

// The walks of all columns, in parts of `part_columns` consecutive columns (the last part may be
// shorter): column j's walk is part p = j / part_columns, entries [begin, ends[j]) with begin =
// ends[j-1], or 0 for a part's first column. Parts let a product's column chunks (or the
// build's tasks) hand over the walks they recorded without concatenating them: a copy of
// megabytes into fresh pages cost more than the walk itself. An entry is block << 3 | flips
// with flips = 4 neg_s + 2 neg_c + neg_m, stored in 16 bits when every block index fits in 13
// (n_blocks <= 8192: d up to about 400,000 with the smallest block size), else in 32: half the
// memory (and the first product's page faults) for the usual sizes, twice the matrices per byte
// of budget. Readers get a View of either kind (the kernels read both without widening).
struct ColumnWalks {
  bool compact = false;  // entries in parts16, else in parts32
  std::int64_t part_columns = 1;
  std::vector<std::uint64_t> ends;
  std::vector<std::vector<std::uint16_t>> parts16;
  std::vector<std::vector<std::uint32_t>> parts32;

  static bool fits_16_bits(const BlockSparseFamily& f) noexcept { return f.n_blocks() <= 8192; }

  // Empty storage for the d columns of a matrix of family f, in n_parts parts.
  void init(const BlockSparseFamily& f, std::int64_t columns_per_part, std::size_t n_parts) {
    compact = fits_16_bits(f);
    part_columns = columns_per_part;
    ends.assign(static_cast<std::size_t>(f.d()), 0);
    if (compact)
      parts16.assign(n_parts, {});
    else
      parts32.assign(n_parts, {});
  }

  // Appends n entries to part p (distinct parts may be filled from distinct threads).
  void append(std::size_t p, const std::uint32_t* e, std::int64_t n) {
    if (compact) {
      auto& part = parts16[p];
      for (std::int64_t k = 0; k < n; ++k) part.push_back(static_cast<std::uint16_t>(e[k]));
    } else {
      parts32[p].insert(parts32[p].end(), e, e + n);
    }
  }
  std::size_t part_size(std::size_t p) const noexcept {
    return compact ? parts16[p].size() : parts32[p].size();
  }
  void reserve(std::size_t p, std::size_t n) {
    if (compact)
      parts16[p].reserve(n);
    else
      parts32[p].reserve(n);
  }

  // Resident bytes (allocated capacity, not just the entries in use).
  std::size_t bytes() const noexcept {
    std::size_t total = ends.capacity() * sizeof(std::uint64_t) +
                        parts16.capacity() * sizeof(std::vector<std::uint16_t>) +
                        parts32.capacity() * sizeof(std::vector<std::uint32_t>);
    for (const auto& p : parts16) total += p.capacity() * sizeof(std::uint16_t);
    for (const auto& p : parts32) total += p.capacity() * sizeof(std::uint32_t);
    return total;
  }

  // Column j's walk where it is stored: 16- or 32-bit entries.
  struct View {
    const std::uint16_t* e16;  // not null if the entries are 16-bit
    const std::uint32_t* e32;  // else these
    std::int64_t n;
  };
  View column(std::int64_t j) const noexcept {
    return column(j, static_cast<std::size_t>(j / part_columns));
  }
  // The same, for a reader that knows column j's part p (kernels walking consecutive columns
  // step p instead of dividing once per column).
  View column(std::int64_t j, std::size_t p) const noexcept {
    const auto ju = static_cast<std::size_t>(j);
    const std::uint64_t begin =
        j == static_cast<std::int64_t>(p) * part_columns ? 0 : ends[ju - 1];
    const auto n = static_cast<std::int64_t>(ends[ju] - begin);
    if (compact) return View{parts16[p].data() + begin, nullptr, n};
    return View{nullptr, parts32[p].data() + begin, n};
  }

  static std::uint32_t encode(const BlockFlips& fl) noexcept {
    return static_cast<std::uint32_t>(fl.block) << 3 |
           static_cast<std::uint32_t>(fl.neg_s * 4 + fl.neg_c * 2 + fl.neg_m);
  }

  static BlockFlips decode(std::uint32_t entry) noexcept {
    return BlockFlips{static_cast<std::int64_t>(entry >> 3), (entry & 4U) != 0, (entry & 2U) != 0,
                      (entry & 1U) != 0};
  }

  // Entries to reserve for the walks of `columns` columns: the mean plus a margin (a part's
  // total is a sum of thousands of walk lengths: 5% is many standard deviations), so a part
  // fills its storage without regrowing, and the capacity the cache counts is near the size.
  static std::size_t reserve_for(const BlockSparseFamily& f, std::int64_t columns) noexcept {
    const double mean = static_cast<double>(f.n_blocks()) * f.density();
    return static_cast<std::size_t>(static_cast<double>(columns) * mean * 1.05) + 64;
  }

  // Walks columns [j0, j1) of R into part p, recording each column's end.
  void walk_part(const BlockSparseMatrix& R, std::int64_t j0, std::int64_t j1, std::size_t p) {
    reserve(p, reserve_for(R.family(), j1 - j0));
    std::vector<std::uint32_t> buffer(static_cast<std::size_t>(R.family().n_blocks()));
    for (std::int64_t j = j0; j < j1; ++j) {
      std::int64_t n = 0;
      R.walk_column(j, [&](const BlockFlips& fl) { buffer[static_cast<std::size_t>(n++)] = encode(fl); });
      append(p, buffer.data(), n);
      ends[static_cast<std::size_t>(j)] = part_size(p);
    }
  }

  static ColumnWalks build(const BlockSparseMatrix& R, int num_threads) {
    const std::int64_t d = R.family().d();
    constexpr std::int64_t kColumnsPerTask = 512;
    const std::int64_t tasks = (d + kColumnsPerTask - 1) / kColumnsPerTask;
    ColumnWalks w;
    w.init(R.family(), kColumnsPerTask, static_cast<std::size_t>(tasks));
    parallel_for(tasks, num_threads, [&](std::int64_t t) {
      w.walk_part(R, t * kColumnsPerTask, std::min(d, (t + 1) * kColumnsPerTask),
                  static_cast<std::size_t>(t));
    });
    return w;
  }
};

class WalkCache {
 public:
  static WalkCache& global() {
    // Never destroyed: a daemon thread may still be inside a kernel when the process runs its
    // static destructors at exit, and must not find the cache's lists freed under it.
    static WalkCache* cache = [] {
      auto* c = new WalkCache();
#if defined(__unix__) || defined(__APPLE__)
      // fork() while another thread holds the lock would leave a forked child with a mutex no
      // thread of it will ever release: hold it across the fork, release it on both sides.
      pthread_atfork([] { global_ptr()->mutex_.lock(); }, [] { global_ptr()->mutex_.unlock(); },
                     [] { global_ptr()->mutex_.unlock(); });
#endif
      return global_ptr() = c;
    }();
    return *cache;
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

  // The matrix's walks if cached (counted as a hit), else nullptr (counted as a miss).
  std::shared_ptr<const ColumnWalks> find(const BlockSparseMatrix& R) {
    const Key key = key_of(R);
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit_ == 0) return nullptr;
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++misses_;
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    ++hits_;
    return it->second->second;
  }

  // Whether walks of R would be kept if offered (the cache is on and they fit its limit).
  bool would_keep(const BlockSparseMatrix& R) {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_ != 0 && estimate_bytes(R) <= limit_;
  }

  // Offers R's walks (built elsewhere, e.g. recorded by a product): kept if they fit.
  void put(const BlockSparseMatrix& R, std::shared_ptr<const ColumnWalks> walks) {
    const Key key = key_of(R);
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit_ == 0 || index_.count(key) != 0 || walks->bytes() > limit_) return;
    lru_.emplace_front(key, std::move(walks));
    index_[key] = lru_.begin();
    bytes_ += lru_.front().second->bytes();
    evict_locked();
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
    const double entry = ColumnWalks::fits_16_bits(f) ? 2.0 : 4.0;
    return static_cast<std::size_t>(blocks * entry) +
           static_cast<std::size_t>(f.d() + 1) * sizeof(std::uint64_t);
  }

  void evict_locked() {
    while (bytes_ > limit_ && !lru_.empty()) {
      bytes_ -= lru_.back().second->bytes();
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
  }

  static WalkCache*& global_ptr() {
    static WalkCache* ptr = nullptr;
    return ptr;
  }

  std::mutex mutex_;
  std::list<Entry> lru_;
  std::map<Key, std::list<Entry>::iterator> index_;
  std::size_t bytes_ = 0, limit_ = kDefaultLimit;
  std::uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace recsketch
