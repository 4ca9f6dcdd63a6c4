// Scalar arguments of the native entry points: integers, reals, flags, strings and thread
// counts, checked with errors that name the argument. They are taken as py::object because
// pybind11's own casters convert too much: its int caster accepts True/False (bool is a
// subclass of int) and, converting, NumPy bools and any NumPy float (np.float32(1.5) became 1);
// its float caster accepts bools; its bool caster any object with a truth value; its string
// caster bytes. The Python layer refuses all of these, so the native entry points do too.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

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

inline std::string type_name(const py::handle& h) {
  return py::str(py::type::of(h).attr("__name__")).cast<std::string>();
}

inline bool is_bool(const py::handle& h) {
  return PyBool_Check(h.ptr()) || py::isinstance(h, py::module_::import("numpy").attr("bool_"));
}

// A Python int (not a bool) or a NumPy integer that fits T: TypeError for any other type,
// ValueError when out of T's range.
template <class T>
T int_arg(const py::handle& h, const char* name) {
  if (!PyLong_CheckExact(h.ptr())) {  // (the common case skips the NumPy type tests)
    if (is_bool(h)) throw py::type_error(std::string(name) + " must be an integer, got a bool");
    if (!PyLong_Check(h.ptr()) && !py::isinstance(h, py::module_::import("numpy").attr("integer")))
      throw py::type_error(std::string(name) + " must be an integer, got " + type_name(h));
  }
  try {
    return h.cast<T>();
  } catch (const py::cast_error&) {
    throw std::invalid_argument(std::string(name) + " is out of range, got " +
                                std::string(py::str(h)));
  }
}

// A real number: a Python or NumPy float or integer, or any other numbers.Real (such as
// fractions.Fraction, rounded to the nearest float64 as float() does); not a bool, nor a
// complex, a string or a decimal.Decimal (which Python itself keeps apart from floats: it is
// not a numbers.Real). The Python layer's checks (recsketch._checks) follow the same rule.
// Finiteness and range are the caller's checks, which name what the value means.
inline double real_arg(const py::handle& h, const char* name) {
  if (!PyFloat_CheckExact(h.ptr())) {
    if (is_bool(h)) throw py::type_error(std::string(name) + " must be a real number, got a bool");
    const auto np = py::module_::import("numpy");
    if (!PyFloat_Check(h.ptr()) && !PyLong_Check(h.ptr()) &&
        !py::isinstance(h, np.attr("integer")) && !py::isinstance(h, np.attr("floating"))) {
      if (!py::isinstance(h, py::module_::import("numbers").attr("Real")))
        throw py::type_error(std::string(name) + " must be a real number, got " + type_name(h));
      PyObject* f = PyNumber_Float(h.ptr());
      if (!f) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw py::error_already_set();
        PyErr_Clear();
        throw std::invalid_argument(std::string(name) + " is out of range, got " +
                                    std::string(py::str(h)));
      }
      const double value = PyFloat_AS_DOUBLE(f);
      Py_DECREF(f);
      return value;
    }
  }
  try {
    return h.cast<double>();
  } catch (const py::cast_error&) {  // an integer beyond the range of double
    throw std::invalid_argument(std::string(name) + " is out of range, got " +
                                std::string(py::str(h)));
  }
}

// A flag: True/False or a NumPy bool, not any object with a truth value (pybind11's bool caster,
// converting, took 2, None, 1.0 and one-element arrays).
inline bool flag_arg(const py::handle& h, const char* name) {
  if (!is_bool(h))
    throw py::type_error(std::string(name) + " must be a bool, got " + type_name(h));
  return h.cast<bool>();
}

// A str (not bytes), as UTF-8.
inline std::string str_arg(const py::handle& h, const char* name) {
  if (!PyUnicode_Check(h.ptr()))
    throw py::type_error(std::string(name) + " must be a str, got " + type_name(h));
  try {
    return h.cast<std::string>();
  } catch (const py::cast_error&) {  // a lone surrogate has no UTF-8 form
    throw std::invalid_argument(std::string(name) + " is not encodable as UTF-8");
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

// num_threads as an entry point takes it: an integer in [0, kMaxNumThreads].
inline int num_threads_arg(const py::handle& h) {
  return check_num_threads(int_arg<int>(h, "num_threads"));
}

}  // namespace recsketch_bind
