// The sketch recursion: one call sketches a batch of flattened graphs (see recsketch/sketch.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "recsketch/sketch.hpp"

namespace py = pybind11;
using recsketch::MatrixRef;

namespace {

MatrixRef as_matrix(const py::handle& h) {
  if (py::isinstance<recsketch::BlockSparseMatrix>(h))
    return MatrixRef(h.cast<const recsketch::BlockSparseMatrix*>());
  if (py::isinstance<recsketch::OrthogonalMatrix>(h))
    return MatrixRef(h.cast<const recsketch::OrthogonalMatrix*>());
  throw py::type_error("expected a native matrix object");
}

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <class T>
const T* data_of(const CArray<T>& a, std::int64_t expected, const char* name) {
  if (a.ndim() != 1 || static_cast<std::int64_t>(a.size()) != expected)
    throw std::invalid_argument(std::string(name) + " has the wrong length");
  return a.data();
}

}  // namespace

void register_sketch(py::module_& m) {
  m.def(
      "sketch_graphs",
      [](const py::list& modules, const py::list& positions, std::int64_t d,
         const CArray<std::int64_t>& graph_ptr, const CArray<std::int32_t>& module,
         const CArray<std::int64_t>& attr_ptr, const CArray<double>& attr,
         const CArray<std::int64_t>& input_ptr, const CArray<std::int64_t>& input_row,
         const CArray<double>& input_weight, bool float64, bool return_objects,
         int num_threads, const py::list& leaf_embed, const py::object& embedded) {
        recsketch::check_threads(num_threads);
        recsketch::MatrixBank bank;
        for (const auto& triple : modules) {
          const auto t = triple.cast<py::tuple>();
          if (t.size() != 3) throw std::invalid_argument("module entries must be 3 matrices");
          bank.modules.push_back({as_matrix(t[0]), as_matrix(t[1]), as_matrix(t[2])});
        }
        for (const auto& p : positions) bank.positions.push_back(as_matrix(p));
        // leaf_embed[m]: None or a C-contiguous float64 (k + 1, d) array A_M; the arrays stay
        // alive in the caller's list for the whole call.
        if (leaf_embed.size() > 0) {
          if (leaf_embed.size() != bank.modules.size())
            throw std::invalid_argument("leaf_embed needs one entry per module");
          for (const auto& h : leaf_embed) {
            if (h.is_none()) {
              bank.leaf_embed.push_back(nullptr);
              bank.leaf_embed_k.push_back(-1);
              continue;
            }
            if (!py::isinstance<py::array>(h)) throw py::type_error("leaf embeddings must be ndarrays");
            auto a = py::reinterpret_borrow<py::array>(h);
            if (!a.dtype().is(py::dtype::of<double>()) || a.ndim() != 2 || a.shape(1) != d ||
                a.shape(0) < 2 || !(a.flags() & py::array::c_style))
              throw std::invalid_argument("leaf embeddings must be C-contiguous float64 (k + 1, d)");
            bank.leaf_embed.push_back(static_cast<const double*>(a.data()));
            bank.leaf_embed_k.push_back(static_cast<std::int64_t>(a.shape(0)) - 1);
          }
        }

        recsketch::GraphBatch g;
        g.n_graphs = static_cast<std::int64_t>(graph_ptr.size()) - 1;
        if (g.n_graphs < 0) throw std::invalid_argument("graph_ptr is empty");
        if (graph_ptr.ndim() != 1) throw std::invalid_argument("graph_ptr must be 1-d");
        g.graph_ptr = graph_ptr.data();
        const std::int64_t rows = g.graph_ptr[g.n_graphs];
        if (rows < 0) throw std::invalid_argument("graph_ptr must end at the number of rows");
        g.rows = rows;
        g.module = data_of(module, rows, "module");
        g.attr_ptr = data_of(attr_ptr, rows + 1, "attr_ptr");
        g.attr = data_of(attr, g.attr_ptr[rows], "attr");
        g.input_ptr = data_of(input_ptr, rows + 1, "input_ptr");
        g.input_row = data_of(input_row, g.input_ptr[rows], "input_row");
        g.input_weight = data_of(input_weight, g.input_ptr[rows], "input_weight");
        CArray<std::uint8_t> flags;
        if (!embedded.is_none()) {
          flags = embedded.cast<CArray<std::uint8_t>>();
          g.embedded = data_of(flags, rows, "embedded");
        }

        auto run = [&](auto tag) -> py::tuple {
          using T = decltype(tag);
          py::array_t<T> overall({g.n_graphs, d});
          py::object objects = py::none();
          T* obj_ptr = nullptr;
          if (return_objects) {
            py::array_t<T> o({rows, d});
            obj_ptr = o.mutable_data();
            objects = o;
          }
          T* out = overall.mutable_data();
          {
            py::gil_scoped_release release;
            recsketch::sketch_graphs<T>(g, bank, d, out, obj_ptr, num_threads);
          }
          return py::make_tuple(overall, objects);
        };
        return float64 ? run(double{}) : run(float{});
      },
      py::arg("modules"), py::arg("positions"), py::arg("d"), py::arg("graph_ptr"),
      py::arg("module"), py::arg("attr_ptr"), py::arg("attr"), py::arg("input_ptr"),
      py::arg("input_row"), py::arg("input_weight"), py::arg("float64"),
      py::arg("return_objects"), py::arg("num_threads") = 0,
      py::arg("leaf_embed") = py::list(), py::arg("embedded") = py::none(),
      "Sketches a batch of flattened graphs, level by level (recsketch/sketch.hpp); returns "
      "(overall, objects or None).");
}
