// Times the block walk alone (the hashing a fresh block-sparse matrix pays in its first
// product): CPU time for all columns of a matrix with the default density. Not part of the
// package.
//   g++ -O3 -std=c++17 -ffp-contract=off -I../../cpp/include walk_driver.cpp -o walk_driver
//   ./walk_driver 16371 51         (d, block size)
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <vector>
#include <algorithm>
#include "recsketch/block_sparse.hpp"
#include "recsketch/walk_cache.hpp"
using namespace recsketch;
static double cpu() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int, char** argv) {
  const std::int64_t d = std::atoll(argv[1]), b = std::atoll(argv[2]);
  const double q = std::log2((double)d) / std::sqrt((double)d);
  auto fam = std::make_shared<const BlockSparseFamily>(d, b, q);
  double best = 1e9; std::size_t entries = 0; std::uint64_t chk = 0;
  for (int t = 0; t < 7; ++t) {
    BlockSparseMatrix R(fam, 1, 100 + t);
    std::vector<std::uint32_t> buf(fam->n_blocks());
    double t0 = cpu();
    entries = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      std::int64_t n = 0;
      R.walk_column(j, [&](const BlockFlips& fl) { buf[n++] = ColumnWalks::encode(fl); });
      entries += n; chk += buf[0];
    }
    best = std::min(best, cpu() - t0);
  }
  std::printf("d=%lld: walk %.3f ms, %zu entries, %.2f ns/entry (chk %llu)\n", (long long)d, best * 1e3, entries, best * 1e9 / entries, (unsigned long long)chk);
}
