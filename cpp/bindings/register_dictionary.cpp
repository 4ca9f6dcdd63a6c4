// The block scan of the dictionary learner: one call per batch of samples, records as arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "arrays.hpp"
#include "recsketch/block_sparse_params.hpp"
#include "recsketch/dictionary.hpp"

namespace py = pybind11;

void register_dictionary(py::module_& m) {
  m.def(
      "scan_blocks",
      [](const py::array& Y, std::int64_t b, double density, double tau,
         std::int64_t first_sample, int num_threads) {
        const auto dt = recsketch_bind::check_matrix_arg(Y, "Y");
        recsketch::ScanParams p;
        p.d = Y.shape(1);
        p.b = b;
        p.index_bits = recsketch::ceil_log2(p.d);
        if (!(density > 0.0 && density <= 1.0)) throw std::invalid_argument("density must be in (0, 1]");
        p.scale = 1.0 / std::sqrt(static_cast<double>(p.d) * density);
        p.tau = tau;
        const std::int64_t n = Y.shape(0);
        std::vector<recsketch::BlockRecord> recs;
        {
          py::gil_scoped_release release;
          if (dt == recsketch_bind::Dtype::f32)
            recs = recsketch::scan_blocks(static_cast<const float*>(Y.data()), n, p, first_sample,
                                          num_threads);
          else
            recs = recsketch::scan_blocks(static_cast<const double*>(Y.data()), n, p,
                                          first_sample, num_threads);
        }
        const auto k = static_cast<py::ssize_t>(recs.size());
        py::array_t<std::int64_t> sample(k), block(k), column(k);
        py::array_t<std::uint64_t> string_key(k), signature_key(k);
        py::array_t<std::uint64_t> pattern({k, py::ssize_t{3}});
        py::array_t<double> magnitude(k), closeness(k);
        py::array_t<std::int8_t> sign(k);
        auto ps = pattern.mutable_unchecked<2>();
        for (py::ssize_t i = 0; i < k; ++i) {
          const auto& r = recs[static_cast<std::size_t>(i)];
          sample.mutable_at(i) = r.sample;
          block.mutable_at(i) = r.block;
          column.mutable_at(i) = r.column;
          string_key.mutable_at(i) = r.string_key;
          signature_key.mutable_at(i) = r.signature_key;
          for (int w = 0; w < 3; ++w) ps(i, w) = r.pattern[w];
          magnitude.mutable_at(i) = r.magnitude;
          closeness.mutable_at(i) = r.closeness;
          sign.mutable_at(i) = static_cast<std::int8_t>(r.sign);
        }
        py::dict out;
        out["sample"] = sample;
        out["block"] = block;
        out["column"] = column;
        out["string_key"] = string_key;
        out["signature_key"] = signature_key;
        out["pattern"] = pattern;
        out["magnitude"] = magnitude;
        out["closeness"] = closeness;
        out["sign"] = sign;
        return out;
      },
      py::arg("Y"), py::arg("block_size"), py::arg("density"), py::arg("tau"),
      py::arg("first_sample") = 0, py::arg("num_threads") = 0,
      "Decode every block of every row of Y (Section 4.2); returns the accepted blocks.");
}
