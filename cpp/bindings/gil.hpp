// Running native kernels without the GIL, safely at interpreter exit.
//
// Why not py::gil_scoped_release: it takes the GIL back in a destructor, which is noexcept.
// When the interpreter finalises while a daemon thread is inside a kernel, CPython (3.11)
// ends that thread with pthread_exit from PyEval_RestoreThread; glibc implements that as a
// forced unwind, and a forced unwind leaving a noexcept destructor calls std::terminate
// ("terminate called without an active exception"). Even where the unwind may pass, every
// frame it leaves releases Python objects (outputs, converted arrays, pybind11's argument
// casters) without the GIL while the main thread finalises. So with glibc retake_gil catches
// the forced unwind and parks the thread until the process ends, as CPython 3.14 does itself
// (PyThread_hang_thread): nothing unwinds, nothing is released. Elsewhere the GIL is retaken
// by ordinary calls outside any destructor, and gil_owned references are leaked if the
// thread is ended there.
#pragma once

#include <pybind11/pybind11.h>

#if defined(__GLIBC__)
#include <cxxabi.h>
#include <unistd.h>
#endif

#include <optional>
#include <type_traits>
#include <utility>

namespace recsketch_bind {

// Whether this thread is taking the GIL back in without_gil, or was ended there by CPython:
// then the unwind that follows runs without the GIL and must not release Python objects.
// Only set where the thread is not parked instead (not glibc).
inline bool& retaking_gil() noexcept {
  static thread_local bool flag = false;
  return flag;
}

inline void retake_gil(PyThreadState* state) {
#if defined(__GLIBC__)
  try {
    PyEval_RestoreThread(state);
  } catch (abi::__forced_unwind&) {
    // CPython is ending this thread at finalisation (pthread_exit). Not rethrown: the unwind
    // would run the callers' destructors without the GIL. The process is exiting; wait for it.
    for (;;) pause();
  }
#else
  retaking_gil() = true;
  PyEval_RestoreThread(state);
  retaking_gil() = false;
#endif
}

// A Python object a binding owns while a kernel runs without the GIL. If the thread is ended
// while retaking the GIL, the reference is leaked: releasing it then could deallocate it (a
// tuple unlinks itself from the garbage collector) while the main thread finalises.
template <class T>
class gil_owned : public T {
 public:
  explicit gil_owned(T o) : T(std::move(o)) {}
  gil_owned(const gil_owned&) = delete;
  gil_owned& operator=(const gil_owned&) = delete;
  ~gil_owned() {
    if (retaking_gil()) this->release();
  }
};

// Returns f() run with the GIL released; the GIL is held again when it returns or throws.
template <class F>
auto without_gil(F&& f) {
  using R = std::invoke_result_t<F&>;
  PyThreadState* state = PyEval_SaveThread();
  if constexpr (std::is_void_v<R>) {
    try {
      f();
    } catch (...) {
      retake_gil(state);  // before the exception reaches pybind11, which needs the GIL
      throw;
    }
    retake_gil(state);
  } else {
    std::optional<R> result;
    try {
      result.emplace(f());
    } catch (...) {
      retake_gil(state);
      throw;
    }
    retake_gil(state);
    return std::move(*result);
  }
}

}  // namespace recsketch_bind
