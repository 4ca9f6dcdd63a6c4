// Build information and the stable key derivation for matrix roles.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "arrays.hpp"
#include "recsketch/parallel.hpp"
#include "recsketch/rng.hpp"
#include "recsketch/wht.hpp"

namespace py = pybind11;

void register_info(py::module_& m) {
  m.def("build_info", [] {
    py::dict info;
    info["openmp"] = recsketch::has_openmp();
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

  m.def(
      "set_wht_path",
      [](const std::string& path) {
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
      "add_rate_probe",
      [](std::int64_t rounds) {
        if (rounds < 0 || rounds > (std::int64_t{1} << 30))
          throw std::invalid_argument("rounds must be in [0, 2^30]");
        py::gil_scoped_release release;
        return recsketch::add_rate_probe(rounds);
      },
      py::arg("rounds"),
      "48 * rounds independent double adds at the WHT kernel's SIMD width (benchmarks time it "
      "for the machine's add rate, the bound of the orthogonal family's transforms).");

  m.def("module_key",
        [](const std::string& name, std::uint64_t slot) { return recsketch::module_key(name, slot); },
        py::arg("name"), py::arg("slot"),
        "64-bit key of R[name, slot]: FNV-1a of the UTF-8 name, mixed with the slot.");
  m.def("position_key", [](std::uint64_t i) { return recsketch::position_key(i); }, py::arg("i"),
        "64-bit key of the tuple-position matrix R[i].");
  m.def("mix64", [](std::uint64_t z) { return recsketch::mix64(z); }, py::arg("z"),
        "The SplitMix64 finaliser (exposed so tests can check the generator independently).");
}
