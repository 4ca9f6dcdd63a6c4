// The sketch recursion: one call sketches a batch of flattened graphs (see recsketch/sketch.hpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "alloc_limit.hpp"
#include "arrays.hpp"
#include "initialized.hpp"
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

// Real-valued inputs convert from any real dtype (recsketch_bind::real_array); index arrays only
// by NumPy's safe casting (a float or a wider integer would be truncated or wrapped silently:
// TypeError instead).
template <class T>
using IndexArray = py::array_t<T, py::array::c_style>;

template <class A>
auto data_of(const A& a, std::int64_t expected, const char* name) {
  if (a.ndim() != 1 || static_cast<std::int64_t>(a.size()) != expected)
    throw std::invalid_argument(std::string(name) + " has the wrong length");
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(a.data())>>;
  if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
    throw std::invalid_argument(std::string(name) + " is not aligned");
  return a.data();
}

// A copy of an index array: the caller's buffer could be rewritten by another thread while the
// kernel runs without the GIL, after the checks, and an index changed then would read out of
// bounds; the checks and the kernel both read the copy.
template <class A>
auto copy_of(const A& a, std::int64_t expected, const char* name) {
  const auto* p = data_of(a, expected, name);
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
  return std::vector<T>(p, p + expected);
}

// An offsets array (graph_ptr, attr_ptr, input_ptr): starts at 0 and never decreases.
void check_offsets(const std::int64_t* p, std::int64_t n, const char* name) {
  if (n > 0 && p[0] != 0) throw std::invalid_argument(std::string(name) + " must start at 0");
  for (std::int64_t k = 1; k < n; ++k)
    if (p[k] < p[k - 1]) throw std::invalid_argument(std::string(name) + " must not decrease");
}

py::tuple as_tuple(const py::handle& h, std::size_t size, const char* what) {
  if (!py::isinstance<py::tuple>(h) || py::len(h) != size)
    throw py::type_error(std::string(what) + " must be tuples of " + std::to_string(size) +
                         " items");
  return py::reinterpret_borrow<py::tuple>(h);
}

}  // namespace

namespace {
// The working budget sketch_graphs runs with (tests lower it to check that slicing and grouping
// change no bit).
std::atomic<std::size_t> sketch_working_bytes{recsketch::kSketchWorkingBytes};
}  // namespace

void register_sketch(py::module_& m) {
  m.def(
      "_set_sketch_working_bytes",
      [](const py::object& n_arg) {
        const auto n = recsketch_bind::int_arg<std::int64_t>(n_arg, "n");
        if (n < 1) throw std::invalid_argument("working bytes must be positive");
        return static_cast<std::int64_t>(sketch_working_bytes.exchange(static_cast<std::size_t>(n)));
      },
      py::arg("n"),
      "Test hook: sets the sketch working budget in bytes for the whole process (default "
      "kSketchWorkingBytes, 256 MiB); returns the previous value.");

  m.def(
      "sketch_graphs",
      [](const py::list& modules_arg, const py::list& positions_arg, const py::object& d_arg,
         const IndexArray<std::int64_t>& graph_ptr, const IndexArray<std::int32_t>& module,
         const IndexArray<std::int64_t>& attr_ptr, const py::object& attr_arg,
         const IndexArray<std::int64_t>& input_ptr, const IndexArray<std::int64_t>& input_row,
         const py::object& input_weight_arg, const py::object& float64_arg,
         const py::object& return_objects_arg, const py::object& num_threads_arg,
         const py::list& leaf_embed_arg, const py::object& embedded) {
        const bool float64 = recsketch_bind::flag_arg(float64_arg, "float64");
        const bool return_objects = recsketch_bind::flag_arg(return_objects_arg, "return_objects");
        // Tuples of the caller's lists, owned for the whole call: the kernel runs without the
        // GIL, and another thread emptying a list would free the matrices or leaf embeddings
        // under it.
        using recsketch_bind::gil_owned;
        const gil_owned<py::tuple> modules{py::tuple(modules_arg)},
            positions{py::tuple(positions_arg)}, leaf_embed{py::tuple(leaf_embed_arg)};
        const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
        const auto d = recsketch_bind::int_arg<std::int64_t>(d_arg, "d");
        if (d < 1 || d > recsketch::kMaxDSketch)
          throw std::invalid_argument("d must be in [1, 2^31 - 1], got " + std::to_string(d));
        recsketch::MatrixBank bank;
        for (const auto& triple : modules) {
          const auto t = as_tuple(triple, 3, "module entries");
          bank.modules.push_back({as_matrix(t[0]), as_matrix(t[1]), as_matrix(t[2])});
        }
        for (const auto& p : positions) bank.positions.push_back(as_matrix(p));
        for (const auto& p : bank.positions)
          if (p.d() != d) throw std::invalid_argument("position matrix of the wrong size");
        for (const auto& mats : bank.modules)
          for (const auto& r : mats)
            if (r.d() != d) throw std::invalid_argument("module matrix of the wrong size");
        // leaf_embed[m]: None or a C-contiguous float64 (k + 1, d) array A_M of finite entries.
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
                a.shape(0) < 2 || !(a.flags() & py::array::c_style) ||
                !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
              throw std::invalid_argument("leaf embeddings must be C-contiguous float64 (k + 1, d)");
            recsketch_bind::check_finite(static_cast<const double*>(a.data()),
                                         static_cast<std::int64_t>(a.size()), "leaf embedding");
            bank.leaf_embed.push_back(static_cast<const double*>(a.data()));
            bank.leaf_embed_k.push_back(static_cast<std::int64_t>(a.shape(0)) - 1);
          }
        }

        // The six index arrays are copied before they are checked (copy_of): the kernel reads
        // only the copies. attr and input_weight stay the caller's (or converted) buffers: a
        // concurrent write to them can only change the numbers, never an index.
        recsketch::GraphBatch g;
        if (graph_ptr.ndim() != 1) throw std::invalid_argument("graph_ptr must be 1-D");
        g.n_graphs = static_cast<std::int64_t>(graph_ptr.size()) - 1;
        if (g.n_graphs < 0) throw std::invalid_argument("graph_ptr is empty");
        const auto graph_ptr_copy = copy_of(graph_ptr, g.n_graphs + 1, "graph_ptr");
        g.graph_ptr = graph_ptr_copy.data();
        // Offsets first: every later length and index check relies on them.
        check_offsets(g.graph_ptr, g.n_graphs + 1, "graph_ptr");
        const std::int64_t rows = g.graph_ptr[g.n_graphs];
        if (rows < 0) throw std::invalid_argument("graph_ptr must end at the number of rows");
        g.rows = rows;
        const auto module_copy = copy_of(module, rows, "module");
        g.module = module_copy.data();
        const auto attr_ptr_copy = copy_of(attr_ptr, rows + 1, "attr_ptr");
        g.attr_ptr = attr_ptr_copy.data();
        check_offsets(g.attr_ptr, rows + 1, "attr_ptr");
        const gil_owned<recsketch_bind::RealArray> attr{recsketch_bind::real_array(attr_arg, "attr")};
        g.attr = data_of(attr, g.attr_ptr[rows], "attr");
        const auto input_ptr_copy = copy_of(input_ptr, rows + 1, "input_ptr");
        g.input_ptr = input_ptr_copy.data();
        check_offsets(g.input_ptr, rows + 1, "input_ptr");
        const auto input_row_copy = copy_of(input_row, g.input_ptr[rows], "input_row");
        g.input_row = input_row_copy.data();
        const gil_owned<recsketch_bind::RealArray> input_weight{
            recsketch_bind::real_array(input_weight_arg, "input_weight")};
        g.input_weight = data_of(input_weight, g.input_ptr[rows], "input_weight");
        std::vector<std::uint8_t> embedded_copy;
        if (!embedded.is_none()) {
          if (!IndexArray<std::uint8_t>::check_(embedded))
            throw py::type_error("embedded must be a C-contiguous uint8 array");
          embedded_copy = copy_of(py::reinterpret_borrow<IndexArray<std::uint8_t>>(embedded), rows,
                                  "embedded");
          g.embedded = embedded_copy.data();
        }
        recsketch_bind::check_finite(g.attr, g.attr_ptr[rows], "attr");
        for (std::int64_t e = 0; e < g.input_ptr[rows]; ++e)
          if (!(g.input_weight[e] >= 0.0 && g.input_weight[e] <= 1.0))
            throw std::invalid_argument("input_weight must be in [0, 1] (and not NaN)");
        // Every row and index against the bank, before any output is allocated.
        recsketch::detail::check_batch(g, bank, d);
        // Everything the call holds at once, against the allocation limit before any output
        // exists (sketch_graphs_peak_bytes), and the index copies above (made before the check:
        // no larger than the index arrays the caller holds). One working budget for the
        // estimate and the run.
        const std::size_t working = sketch_working_bytes.load();
        const std::uint64_t index_copies = recsketch_bind::add_bytes(
            recsketch_bind::mul_bytes(static_cast<std::uint64_t>(g.n_graphs + 1 + 2 * (rows + 1) +
                                                                 g.input_ptr[rows]),
                                      sizeof(std::int64_t)),
            static_cast<std::uint64_t>(rows) * (sizeof(std::int32_t) + (g.embedded ? 1 : 0)));
        recsketch_bind::check_alloc(
            recsketch_bind::add_bytes(
                recsketch::sketch_graphs_peak_bytes(g, bank, d,
                                                    float64 ? sizeof(double) : sizeof(float),
                                                    return_objects, num_threads, working),
                index_copies),
            "sketch_graphs: " + std::to_string(g.n_graphs) + " sketches" +
                (return_objects ? " and " + std::to_string(rows) + " object sketches" : "") +
                " of d=" + std::to_string(d) + (float64 ? " float64" : " float32") +
                " (outputs, object sketches in flight for a graph of up to " +
                std::to_string(recsketch::widest_graph(g)) +
                " objects, a level slice's and the products' scratch)");

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
          recsketch_bind::without_gil([&] {
            recsketch::sketch_graphs<T>(g, bank, d, out, obj_ptr, num_threads, working);
          });
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
