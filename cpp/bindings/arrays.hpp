// Buffer checks shared by the binding files: dtype, layout and finiteness, with errors that name
// the argument. pybind11 turns std::invalid_argument into ValueError and py::type_error into
// TypeError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "gil.hpp"
#include "recsketch/parallel.hpp"

namespace py = pybind11;

namespace recsketch_bind {

// Largest num_threads any entry point accepts (0 means every available thread). The OpenMP
// runtime aborts or crashes when asked for thousands of threads, and no kernel of recsketch
// scales past a few hundred, so larger requests are refused rather than clamped.
inline constexpr int kMaxNumThreads = recsketch::kMaxThreads;

inline int check_num_threads(int num_threads) {
  if (num_threads < 0 || num_threads > kMaxNumThreads)
    throw std::invalid_argument("num_threads must be in [0, " + std::to_string(kMaxNumThreads) +
                                "] (0: every thread), got " + std::to_string(num_threads));
  return num_threads;
}

// A vector of reals that must all be finite.
inline void check_finite(const double* p, std::int64_t n, const char* name) {
  bool finite = true;
  for (std::int64_t k = 0; k < n; ++k) finite &= std::isfinite(p[k]);
  if (!finite) throw std::invalid_argument(std::string(name) + " contains NaN or infinity");
}

enum class Dtype { f32, f64 };

inline Dtype float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return Dtype::f32;
  if (a.dtype().is(py::dtype::of<double>())) return Dtype::f64;
  throw py::type_error(std::string(name) + " must be a float32 or float64 array, got dtype " +
                       py::str(a.dtype()).cast<std::string>());
}

// A C-contiguous 2-D array with finite entries; returns its dtype.
inline Dtype check_matrix_arg(const py::array& a, const char* name) {
  const Dtype dt = float_dtype(a, name);
  if (a.ndim() != 2)
    throw std::invalid_argument(std::string(name) + " must be 2-D here, got " +
                                std::to_string(a.ndim()) + " dimensions");
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) +
                                " must be C-contiguous (use numpy.ascontiguousarray)");
  const std::int64_t size = static_cast<std::int64_t>(a.size());
  bool finite = true;
  recsketch_bind::without_gil([&] {
    if (dt == Dtype::f32) {
      const float* p = static_cast<const float*>(a.data());
      for (std::int64_t k = 0; k < size; ++k) finite &= std::isfinite(p[k]);
    } else {
      const double* p = static_cast<const double*>(a.data());
      for (std::int64_t k = 0; k < size; ++k) finite &= std::isfinite(p[k]);
    }
  });
  if (!finite) throw std::invalid_argument(std::string(name) + " contains NaN or infinity");
  return dt;
}

}  // namespace recsketch_bind
