// The extension module recsketch._core: wires the per-area registration functions together.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_info(py::module_& m);
void register_block_sparse(py::module_& m);
void register_matrices(py::module_& m);
void register_sketch(py::module_& m);
void register_dictionary(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "recsketch native core (use the recsketch package, not this module directly)";
  register_info(m);
  register_block_sparse(m);
  register_matrices(m);
  register_sketch(m);
  register_dictionary(m);
}
