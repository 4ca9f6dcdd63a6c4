// Build information and the stable key derivation for matrix roles.
#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>
#include <string>

#include "alloc_limit.hpp"
#include "arrays.hpp"
#include "recsketch/block_sparse_params.hpp"
#include "recsketch/multiversion.hpp"
#include "recsketch/parallel.hpp"
#include "recsketch/rng.hpp"
#include "recsketch/wht.hpp"

namespace py = pybind11;

namespace {

// The instruction set the hot loops run with. Where multiversion.hpp compiles them twice
// (target_clones, resolved at load time by the same CPU test), report the clone the loader
// picked; elsewhere the ISA is fixed at compile time. Keep the condition in step with
// multiversion.hpp.
std::string simd_path() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(RECSKETCH_NO_MULTIVERSION)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? "avx2 (chosen at run time; baseline x86-64 clone also built)"
                                        : "x86-64 baseline (chosen at run time: no AVX2 on this CPU)";
#elif defined(__AVX2__)
  return "avx2 (compile time)";
#elif defined(__x86_64__) || defined(_M_X64)
  return "x86-64 baseline, SSE2 (compile time)";
#elif defined(__ARM_NEON) || defined(__aarch64__) || defined(_M_ARM64)
  return "neon (compile time)";
#else
  return "scalar (compile time)";
#endif
}

}  // namespace

void register_info(py::module_& m) {
  m.def("build_info", [] {
    py::dict info;
    info["openmp"] = recsketch::has_openmp();
#ifdef _OPENMP
    info["openmp_version"] = static_cast<long>(_OPENMP);  // yyyymm of the spec implemented
#else
    info["openmp_version"] = py::none();
#endif
    info["simd"] = simd_path();
    info["max_threads"] = recsketch::default_num_threads();
    info["native"] = static_cast<bool>(RECSKETCH_NATIVE_BUILD);
    info["wht_path"] = recsketch::wht_path() == recsketch::WhtPath::avx2 ? "avx2" : "portable";
#if defined(__clang__)
    info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    info["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#else
    info["compiler"] = std::string("unknown");
#endif
    return info;
  }, "Facts about this build of the native core.");

  m.attr("MAX_NUM_THREADS") = recsketch_bind::kMaxNumThreads;
  m.attr("MIN_DENSITY") = recsketch::kMinDensity;
  m.attr("MAX_D_SKETCH") = recsketch::kMaxDSketch;

  m.attr("DEFAULT_ALLOC_LIMIT") = recsketch_bind::default_alloc_limit();
  m.def(
      "alloc_limit", [] { return recsketch_bind::alloc_limit().load(); },
      "Bytes a native call may allocate for outputs and scratch sized by its arguments.");
  m.def(
      "set_alloc_limit",
      [](const py::object& bytes_arg) {
        const auto bytes = recsketch_bind::int_arg<std::uint64_t>(bytes_arg, "nbytes");
        return recsketch_bind::alloc_limit().exchange(bytes);
      },
      py::arg("nbytes"),
      "Sets the allocation limit in bytes for the whole process; returns the previous one.");
  m.def(
      "check_alloc",
      [](const py::object& bytes_arg, const py::object& what_arg, const py::object& hint_arg) {
        recsketch_bind::check_alloc(recsketch_bind::int_arg<std::uint64_t>(bytes_arg, "nbytes"),
                                    recsketch_bind::str_arg(what_arg, "what"),
                                    recsketch_bind::str_arg(hint_arg, "hint"));
      },
      py::arg("nbytes"), py::arg("what"), py::arg("hint") = "",
      "ValueError if nbytes exceeds the allocation limit, naming `what` (then `hint`): the check "
      "and message of every native entry point, for the Python layer's own buffers.");

  m.def(
      "set_wht_path",
      [](const py::object& path_arg) {
        const std::string path = recsketch_bind::str_arg(path_arg, "path");
        if (path == "auto")
          recsketch::set_wht_path(recsketch::WhtPath::automatic);
        else if (path == "portable")
          recsketch::set_wht_path(recsketch::WhtPath::portable);
        else if (path == "avx2")
          recsketch::set_wht_path(recsketch::WhtPath::avx2);
        else
          throw std::invalid_argument("wht path must be 'auto', 'portable' or 'avx2', got '" + path + "'");
      },
      py::arg("path"),
      "Force the Walsh-Hadamard kernel of the orthogonal family for the whole process (tests and "
      "benchmarks: every path gives the same bits). 'auto' restores the CPU's best.");

  m.def(
      "_set_baseline_isa",
      [](const py::object& forced) {
        recsketch::baseline_isa_forced().store(recsketch_bind::flag_arg(forced, "forced"));
      },
      py::arg("forced"),
      "Tests only: run the block-sparse kernels' copy built for the baseline ISA (True) or the "
      "one chosen at load time (False, the default), for the whole process.");

  m.def(
      "add_rate_probe",
      [](const py::object& rounds_arg) {
        const auto rounds = recsketch_bind::int_arg<std::int64_t>(rounds_arg, "rounds");
        if (rounds < 0 || rounds > (std::int64_t{1} << 30))
          throw std::invalid_argument("rounds must be in [0, 2^30]");
        return recsketch_bind::without_gil([&] { return recsketch::add_rate_probe(rounds); });
      },
      py::arg("rounds"),
      "48 * rounds independent double adds at the WHT kernel's SIMD width (benchmarks time it "
      "for the machine's add rate, the bound of the orthogonal family's transforms).");

  m.def(
      "_parallel_probe",
      [](const py::object& n_arg, const py::object& num_threads_arg,
         const py::object& throw_from_arg) {
        const auto n = recsketch_bind::int_arg<std::int64_t>(n_arg, "n");
        const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
        const auto throw_from =
            recsketch_bind::int_arg<std::int64_t>(throw_from_arg, "throw_from");
        if (n < 0 || n > (std::int64_t{1} << 20)) throw std::invalid_argument("n must be in [0, 2^20]");
        const int threads = recsketch::check_threads(num_threads);
        std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
        recsketch_bind::without_gil([&] {
          recsketch::parallel_for(n, threads, [&](std::int64_t i) {
            // long enough that helpers are still inside the loop when an item throws
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            runs[static_cast<std::size_t>(i)].fetch_add(1);
            if (throw_from >= 0 && i >= throw_from)
              throw std::runtime_error("parallel probe item " + std::to_string(i));
          });
        });
        py::list out;
        for (auto& r : runs) out.append(r.load());
        return out;
      },
      py::arg("n"), py::arg("num_threads"), py::arg("throw_from") = -1,
      "Test hook: runs n pool items (items >= throw_from throw std::runtime_error); returns how "
      "often each item ran.");

  m.def(
      "_pool_stats",
      [] {
        const auto st = recsketch::detail::ThreadPool::global().stats();
        py::dict d;
        d["threads"] = st.threads;
        d["wakeups"] = st.wakeups;
        d["joined"] = st.joined;
        return d;
      },
      "Test hook: pool threads created, times one woke up, times one joined a loop.");

  m.def("module_key",
        [](const py::object& name, const py::object& slot) {
          return recsketch::module_key(recsketch_bind::str_arg(name, "name"),
                                       recsketch_bind::int_arg<std::uint64_t>(slot, "slot"));
        },
        py::arg("name"), py::arg("slot"),
        "64-bit key of R[name, slot]: FNV-1a of the UTF-8 name, mixed with the slot.");
  m.def("position_key",
        [](const py::object& i) {
          return recsketch::position_key(recsketch_bind::int_arg<std::uint64_t>(i, "i"));
        },
        py::arg("i"),
        "64-bit key of the tuple-position matrix R[i].");
  m.def("mix64",
        [](const py::object& z) {
          return recsketch::mix64(recsketch_bind::int_arg<std::uint64_t>(z, "z"));
        },
        py::arg("z"),
        "The SplitMix64 finaliser (exposed so tests can check the generator independently).");
}
