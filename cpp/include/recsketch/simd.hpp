// Small SIMD vocabulary for the kernels: fixed-width packs of N values with elementwise
// arithmetic, a write prefetch and a forced-inline attribute, on any C++17 compiler.
//
// Design notes
// - With GCC and Clang a pack is a vector-extension type: AVX2 registers in the AVX2 clone of a
//   kernel (multiversion.hpp), SSE2 halves otherwise. Elsewhere (MSVC) it is a plain array with
//   the same elementwise operators. Every operation is elementwise (no FMA, no reassociation),
//   so all three give the same bits; RECSKETCH_PORTABLE_SIMD forces the plain version so that
//   this can be tested with GCC.
// - Packs are only used inside always-inlined code: no function passes one by value (that ABI
//   differs with and without AVX).
#pragma once

#include <cstddef>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(RECSKETCH_PORTABLE_SIMD)
#define RECSKETCH_VECTOR_EXTENSIONS 1
#define RECSKETCH_ALWAYS_INLINE inline __attribute__((always_inline))
#define RECSKETCH_PREFETCH_WRITE(p) __builtin_prefetch((p), 1)
#else
#define RECSKETCH_VECTOR_EXTENSIONS 0
#if defined(_MSC_VER)
#define RECSKETCH_ALWAYS_INLINE __forceinline
#else
#define RECSKETCH_ALWAYS_INLINE inline
#endif
#define RECSKETCH_PREFETCH_WRITE(p) ((void)(p))
#endif

namespace recsketch {

#if !RECSKETCH_VECTOR_EXTENSIONS
// N values of type A with the elementwise operators the kernels use.
template <class A, int N>
struct Pack {
  A v[N];
  A& operator[](int i) noexcept { return v[i]; }
  A operator[](int i) const noexcept { return v[i]; }
  Pack& operator+=(const Pack& o) noexcept {
    for (int i = 0; i < N; ++i) v[i] += o.v[i];
    return *this;
  }
  friend Pack operator+(Pack a, const Pack& b) noexcept { return a += b; }
  friend Pack operator*(Pack a, const Pack& b) noexcept {
    for (int i = 0; i < N; ++i) a.v[i] *= b.v[i];
    return a;
  }
  friend Pack operator*(Pack a, A s) noexcept {
    for (int i = 0; i < N; ++i) a.v[i] *= s;
    return a;
  }
};
#endif

// N values of type A as one SIMD register (N * sizeof(A) a power of two).
template <class A, int N>
struct Vec {
#if RECSKETCH_VECTOR_EXTENSIONS
  typedef A type __attribute__((vector_size(N * sizeof(A))));
#else
  using type = Pack<A, N>;
#endif
};

// Values of type A in one 32-byte register.
template <class A>
inline constexpr int kLanes = static_cast<int>(32 / sizeof(A));

}  // namespace recsketch
