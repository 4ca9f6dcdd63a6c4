// Buffer checks shared by the binding files: dtype, layout and finiteness, with errors that name
// the argument. pybind11 turns std::invalid_argument into ValueError and py::type_error into
// TypeError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "gil.hpp"
#include "recsketch/parallel.hpp"
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;

namespace recsketch_bind {

// Largest num_threads any entry point accepts (0 means every available thread). No kernel of
// recsketch scales past a few hundred threads, and thread creation fails long before the
// thousands, so larger requests are refused rather than clamped.
inline constexpr int kMaxNumThreads = recsketch::kMaxThreads;

// An integer argument taken as a py::object: pybind11's int caster accepts True/False (bool is a
// subclass of int) and, converting, NumPy bools; the Python layer refuses both, so the native
// entry points do too.
template <class T>
T int_arg(const py::handle& h, const char* name) {
  if (PyBool_Check(h.ptr()) || py::isinstance(h, py::module_::import("numpy").attr("bool_")))
    throw py::type_error(std::string(name) + " must be an integer, got a bool");
  if (!PyLong_Check(h.ptr()) && !py::isinstance(h, py::module_::import("numpy").attr("integer")))
    throw py::type_error(std::string(name) + " must be an integer, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  try {
    return h.cast<T>();
  } catch (const py::cast_error&) {
    throw std::invalid_argument(std::string(name) + " is out of range, got " +
                                std::string(py::str(h)));
  }
}

inline int check_num_threads(int num_threads) {
  if (num_threads < 0 || num_threads > kMaxNumThreads)
    throw std::invalid_argument("num_threads must be in [0, " + std::to_string(kMaxNumThreads) +
                                "] (0: every thread), got " + std::to_string(num_threads));
#if defined(_OPENMP) && _OPENMP >= 200805  // omp_get_thread_limit is OpenMP 3.0 (not MSVC's 2.0)
  // A user's OMP_THREAD_LIMIT (set to stay under a process limit such as ulimit -u) is a
  // limit the thread pool honours too.
  const int limit = omp_get_thread_limit();
  if (num_threads > limit)
    throw std::invalid_argument("num_threads " + std::to_string(num_threads) +
                                " exceeds the OpenMP thread limit " + std::to_string(limit) +
                                " (OMP_THREAD_LIMIT)");
#endif
  return num_threads;
}

// Whether p[0..n) are all finite (no early exit: the loop vectorises).
template <class T>
bool all_finite(const T* p, std::int64_t n) noexcept {
  bool finite = true;
  for (std::int64_t k = 0; k < n; ++k) finite &= std::isfinite(p[k]);
  return finite;
}

inline void throw_not_finite(const char* name) {
  throw std::invalid_argument(std::string(name) + " contains NaN or infinity");
}

// A vector of reals that must all be finite.
inline void check_finite(const double* p, std::int64_t n, const char* name) {
  if (!all_finite(p, n)) throw_not_finite(name);
}

enum class Dtype { f32, f64 };

inline Dtype float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return Dtype::f32;
  if (a.dtype().is(py::dtype::of<double>())) return Dtype::f64;
  throw py::type_error(std::string(name) + " must be a float32 or float64 array, got dtype " +
                       py::str(a.dtype()).cast<std::string>());
}

// An aligned C-contiguous 2-D array with finite entries; returns its dtype. The kernels load
// whole floats (and SIMD vectors) from it, which misaligned data makes undefined behaviour.
inline Dtype check_matrix_arg(const py::array& a, const char* name) {
  const Dtype dt = float_dtype(a, name);
  if (a.ndim() != 2)
    throw std::invalid_argument(std::string(name) + " must be 2-D here, got " +
                                std::to_string(a.ndim()) + " dimensions");
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) +
                                " must be C-contiguous (use numpy.ascontiguousarray)");
  const std::size_t align = dt == Dtype::f32 ? alignof(float) : alignof(double);
  // (an empty array is never read, and NumPy calls it aligned wherever it points)
  if (a.size() > 0 && reinterpret_cast<std::uintptr_t>(a.data()) % align != 0)
    throw std::invalid_argument(std::string(name) + " must be aligned to its dtype " +
                                "(numpy.array(x) makes an aligned copy)");
  const std::int64_t size = static_cast<std::int64_t>(a.size());
  bool finite = true;
  recsketch_bind::without_gil([&] {
    finite = dt == Dtype::f32 ? all_finite(static_cast<const float*>(a.data()), size)
                              : all_finite(static_cast<const double*>(a.data()), size);
  });
  if (!finite) throw_not_finite(name);
  return dt;
}

}  // namespace recsketch_bind
