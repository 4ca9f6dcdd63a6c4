// Times the Walsh-Hadamard kernel alone (no Python, no copies): CPU time per transform with a
// sign diagonal before and after, and the add rate it reaches. Not part of the package.
//   g++ -O3 -std=c++17 -ffp-contract=off -I../../cpp/include wht_driver.cpp -o wht_driver
//   ./wht_driver 4096 20000        (d, transforms per timing; a third argument 1 forces the
//                                   portable path)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <algorithm>
#include <ctime>
#include "recsketch/wht.hpp"
#include "recsketch/rng.hpp"
using namespace recsketch;
static double cpu() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char** argv) {
  const std::int64_t d = std::atoll(argv[1]);
  const int reps = std::atoi(argv[2]);
  const int path = argc > 3 ? std::atoi(argv[3]) : 0;
  if (path == 1) set_wht_path(WhtPath::portable);
  std::vector<double> v(d);
  for (std::int64_t k = 0; k < d; ++k) v[k] = (double)(k % 7) - 3.0;
  std::vector<std::uint64_t> s1((d + 63) / 64), s2((d + 63) / 64);
  stream_bits(stream_state(1, 2, Stream::orthogonal_signs, 1), d, s1.data());
  stream_bits(stream_state(1, 2, Stream::orthogonal_signs, 2), d, s2.data());
  const double c = 1.0 / std::sqrt((double)d);
  double best = 1e9;
  for (int t = 0; t < 7; ++t) {
    double t0 = cpu();
    for (int r = 0; r < reps; ++r) {
      wht(v.data(), d, SignedScale{s1.data(), c}, SignedScale{});
      wht(v.data(), d, SignedScale{s2.data(), c}, SignedScale{s1.data(), 1.0});
    }
    double t1 = cpu();
    best = std::min(best, (t1 - t0) / (2.0 * reps));
  }
  double lg = 0; for (std::int64_t x = d; x > 1; x >>= 1) ++lg;
  double norm = 0; for (double e : v) norm += e * e;  // each transform is orthonormal here
  std::printf("d=%lld: %.3f us per transform, %.2f G adds/s (norm^2 %.6g)\n", (long long)d, best * 1e6, d * lg / best / 1e9, norm);
}
