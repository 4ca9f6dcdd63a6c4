// Running native kernels without the GIL, safely at interpreter exit.
//
// Why not py::gil_scoped_release: it takes the GIL back in a destructor, which is noexcept.
// When the interpreter finalises while a daemon thread is inside a kernel, CPython (3.11)
// ends that thread with pthread_exit from PyEval_RestoreThread; glibc implements that as a
// forced unwind, and a forced unwind leaving a noexcept destructor calls std::terminate
// ("terminate called without an active exception"). Here the GIL is retaken by ordinary calls
// outside any destructor, so the unwind passes through (pybind11 rethrows it) and the thread
// ends quietly.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <type_traits>
#include <utility>

namespace recsketch_bind {

// Returns f() run with the GIL released; the GIL is held again when it returns or throws.
template <class F>
auto without_gil(F&& f) {
  using R = std::invoke_result_t<F&>;
  PyThreadState* state = PyEval_SaveThread();
  if constexpr (std::is_void_v<R>) {
    try {
      f();
    } catch (...) {
      PyEval_RestoreThread(state);  // before the exception reaches pybind11, which needs the GIL
      throw;
    }
    PyEval_RestoreThread(state);
  } else {
    std::optional<R> result;
    try {
      result.emplace(f());
    } catch (...) {
      PyEval_RestoreThread(state);
      throw;
    }
    PyEval_RestoreThread(state);
    return std::move(*result);
  }
}

}  // namespace recsketch_bind
