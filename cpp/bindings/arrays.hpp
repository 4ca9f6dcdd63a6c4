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
#include "scalars.hpp"

namespace py = pybind11;

namespace recsketch_bind {

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

// A real-valued operand as a C-contiguous float64 array. Any real dtype converts (integers,
// float32); a bool, complex, string or object array is refused, where NumPy's forced cast would
// drop imaginary parts, parse strings or call each object's __float__.
using RealArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

inline RealArray real_array(const py::handle& h, const char* name) {
  const py::array a = py::array::ensure(h);
  if (!a) throw py::type_error(std::string(name) + " must be an array of real numbers");
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(std::string(name) + " must hold real numbers (a float or integer " +
                         "dtype), got dtype " + py::str(a.dtype()).cast<std::string>());
  return RealArray::ensure(a);
}

enum class Dtype { f32, f64 };

inline Dtype float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return Dtype::f32;
  if (a.dtype().is(py::dtype::of<double>())) return Dtype::f64;
  throw py::type_error(std::string(name) + " must be a float32 or float64 array, got dtype " +
                       py::str(a.dtype()).cast<std::string>());
}

// An aligned C-contiguous 2-D float32/float64 array; returns its dtype. The kernels load whole
// floats (and SIMD vectors) from it, which misaligned data makes undefined behaviour.
inline Dtype check_matrix_layout(const py::array& a, const char* name) {
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
  return dt;
}

// check_matrix_layout, and every entry finite.
inline Dtype check_matrix_arg(const py::array& a, const char* name) {
  const Dtype dt = check_matrix_layout(a, name);
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
