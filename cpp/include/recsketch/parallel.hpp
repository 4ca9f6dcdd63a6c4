// A parallel for-loop over independent work items, with a serial fallback without OpenMP.
//
// Work items must write disjoint outputs: results may then not depend on the thread count,
// which is the reproducibility contract of recsketch. Bodies must not throw.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace recsketch {

inline constexpr bool has_openmp() noexcept {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// Threads used when the caller passes num_threads <= 0.
inline int default_num_threads() noexcept {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int resolve_threads(int num_threads) noexcept {
  return num_threads > 0 ? num_threads : default_num_threads();
}

template <class Body>
void parallel_for(std::int64_t n, int num_threads, Body&& body) {
  const int threads = resolve_threads(num_threads);
#ifdef _OPENMP
  if (threads > 1 && n > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#else
  (void)threads;
#endif
  for (std::int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace recsketch
