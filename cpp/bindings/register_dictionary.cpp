// The block scan of the dictionary learner: one call per batch of samples, records as arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "recsketch/block_sparse_params.hpp"
#include "recsketch/dictionary.hpp"

namespace py = pybind11;

void register_dictionary(py::module_& m) {
  m.def(
      "scan_blocks",
      [](const py::array& Y, const py::object& b_arg, const py::object& density_arg,
         const py::object& tau_arg, const py::object& first_sample_arg,
         const py::object& num_threads_arg) {
        const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
        const auto b = recsketch_bind::int_arg<std::int64_t>(b_arg, "block_size");
        const double density = recsketch_bind::real_arg(density_arg, "density");
        const double tau = recsketch_bind::real_arg(tau_arg, "tau");
        const auto first_sample =
            recsketch_bind::int_arg<std::int64_t>(first_sample_arg, "first_sample");
        // dtype and layout here; finiteness inside the scan (one pass over Y, not two)
        const auto dt = recsketch_bind::check_matrix_layout(Y, "Y");
        recsketch::ScanParams p;
        p.d = Y.shape(1);
        if (p.d < 1 || p.d > recsketch::kMaxDSketch)
          throw std::invalid_argument("Y must have between 1 and 2^31 - 1 columns");
        p.b = b;
        if (b < 3 || b % 3 != 0 || b > 192 || p.d % b != 0 || b < recsketch::min_block_size(p.d))
          throw std::invalid_argument(
              "block_size must be a multiple of 3 in [3 (ceil(log2 d) + 3), 192] dividing d");
        if (!(tau > 0.0 && tau < 1.0)) throw std::invalid_argument("tau must be in (0, 1)");
        p.index_bits = recsketch::ceil_log2(p.d);
        if (!(density > 0.0 && density <= 1.0)) throw std::invalid_argument("density must be in (0, 1]");
        p.scale = 1.0 / std::sqrt(static_cast<double>(p.d) * density);
        p.tau = tau;
        const std::int64_t n = Y.shape(0);
        // sample ids are first_sample + row: they must stay nonnegative and fit int64
        if (first_sample < 0 || first_sample > std::numeric_limits<std::int64_t>::max() - n)
          throw std::invalid_argument("first_sample must be in [0, 2^63 - 1 - rows of Y], got " +
                                      std::to_string(first_sample));
        std::vector<std::vector<recsketch::BlockRecord>> parts;
        recsketch_bind::without_gil([&] {
          if (dt == recsketch_bind::Dtype::f32)
            parts = recsketch::scan_blocks(static_cast<const float*>(Y.data()), n, p, first_sample,
                                          num_threads);
          else
            parts = recsketch::scan_blocks(static_cast<const double*>(Y.data()), n, p,
                                          first_sample, num_threads);
        });
        // The records leave as one structured array (no per-field copies); the field
        // offsets come from the struct itself.
        using R = recsketch::BlockRecord;
        py::list names, formats, offsets;
        auto field = [&](const char* name, const char* format, std::size_t offset) {
          names.append(name);
          formats.append(format);
          offsets.append(offset);
        };
        field("sample", "<i8", offsetof(R, sample));
        field("block", "<i8", offsetof(R, block));
        field("column", "<i8", offsetof(R, column));
        field("string_key", "<u8", offsetof(R, string_key));
        field("signature_key", "<u8", offsetof(R, signature_key));
        field("pattern", "(3,)<u8", offsetof(R, pattern));
        field("magnitude", "<f8", offsetof(R, magnitude));
        field("sign", "<i4", offsetof(R, sign));
        field("closeness", "<f8", offsetof(R, closeness));
        py::dict spec;
        spec["names"] = names;
        spec["formats"] = formats;
        spec["offsets"] = offsets;
        spec["itemsize"] = sizeof(R);
        py::dtype dtype = py::dtype::from_args(spec);
        std::size_t total = 0;
        for (const auto& part : parts) total += part.size();
        py::array out(dtype, {static_cast<py::ssize_t>(total)}, {});
        auto* dst = static_cast<char*>(out.mutable_data());
        for (const auto& part : parts) {
          if (part.empty()) continue;
          std::memcpy(dst, part.data(), part.size() * sizeof(R));
          dst += part.size() * sizeof(R);
        }
        return out;
      },
      py::arg("Y"), py::arg("block_size"), py::arg("density"), py::arg("tau"),
      py::arg("first_sample") = 0, py::arg("num_threads") = 0,
      "Decode every block of every row of Y (Section 4.2); returns the accepted blocks.");
}
