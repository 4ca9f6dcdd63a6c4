// The two matrix families as Python classes: products, and materialisation for tests/interop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "alloc_limit.hpp"
#include "arrays.hpp"
#include "initialized.hpp"
#include "recsketch/block_sparse_kernels.hpp"
#include "recsketch/orthogonal.hpp"

namespace py = pybind11;
using recsketch::BlockSparseFamily;
using recsketch::BlockSparseMatrix;
using recsketch::OrthogonalMatrix;
using recsketch_bind::Dtype;

namespace {

// Checks x (n x m) against a d x d matrix, and the output with scratch(n, m) bytes of the
// kernel's scratch against the allocation limit; runs kernel(x_ptr, n, m, out_ptr) without the
// GIL.
template <class Scratch, class Kernel>
py::array apply_checked(std::int64_t d, const py::array& x, bool transpose, bool half,
                        Scratch&& scratch, Kernel&& kernel) {
  const Dtype dt = recsketch_bind::check_matrix_arg(x, "x");
  const std::int64_t n = x.shape(0), m = x.shape(1);
  if ((transpose || half) ? m != d : m > d)
    throw std::invalid_argument("x has " + std::to_string(m) + " columns but the matrix is " +
                                std::to_string(d) + " x " + std::to_string(d) +
                                ((transpose || half) ? "" : " (short vectors need m <= d_sketch)"));
  using recsketch_bind::mul_bytes;
  const std::uint64_t itemsize = dt == Dtype::f32 ? 4 : 8;
  recsketch_bind::check_alloc(
      recsketch_bind::add_bytes(mul_bytes(mul_bytes(static_cast<std::uint64_t>(n), d), itemsize),
                                scratch(n, m)),
      "apply: the product of x (" + std::to_string(n) + " rows) with a " + std::to_string(d) +
          " x " + std::to_string(d) + " matrix (output and scratch)");
  auto run = [&](auto tag) -> py::array {
    using T = decltype(tag);
    py::array_t<T> out({n, d});
    const T* src = static_cast<const T*>(x.data());
    T* dst = out.mutable_data();
    recsketch_bind::without_gil([&] { kernel(src, n, m, dst); });
    return std::move(out);
  };
  return dt == Dtype::f32 ? run(float{}) : run(double{});
}

template <class T>
py::array_t<T> sign_array(const std::uint64_t* bits, std::int64_t n) {
  py::array_t<T> out(n);
  auto o = out.template mutable_unchecked<1>();
  for (std::int64_t r = 0; r < n; ++r)
    o(r) = recsketch::bit_at(bits, static_cast<std::size_t>(r)) ? T(-1) : T(1);
  return out;
}

// The number of leading columns an entry point was asked for: [0, d], or -1 for all d.
std::int64_t columns_arg(const BlockSparseMatrix& R, const py::object& h) {
  const auto columns = recsketch_bind::int_arg<std::int64_t>(h, "columns");
  const std::int64_t d = R.family().d();
  if (columns < -1 || columns > d)
    throw std::invalid_argument("columns must be in [0, " + std::to_string(d) +
                                "] (or -1 for all), got " + std::to_string(columns));
  return columns < 0 ? d : columns;
}

template <class I>
py::tuple csc_arrays(const BlockSparseMatrix& R, const std::vector<std::int64_t>& counts, bool f64,
                     int num_threads) {
  // the first counts.size() columns
  const std::int64_t d = static_cast<std::int64_t>(counts.size()), b = R.family().block_size();
  py::array_t<I> indptr(d + 1);
  I* ip = indptr.mutable_data();
  ip[0] = 0;
  for (std::int64_t j = 0; j < d; ++j)
    ip[j + 1] = static_cast<I>(ip[j] + counts[static_cast<std::size_t>(j)] * b);
  const std::int64_t nnz = static_cast<std::int64_t>(ip[d]);
  using recsketch_bind::mul_bytes;
  recsketch_bind::check_alloc(
      recsketch_bind::add_bytes(
          mul_bytes(static_cast<std::uint64_t>(nnz), sizeof(I) + (f64 ? 8 : 4)),
          mul_bytes(static_cast<std::uint64_t>(d), sizeof(I) + 8)),
      "csc(columns=" + std::to_string(d) + "): " + std::to_string(nnz) +
          " nonzeros (values, indices, indptr and a count per column)");
  py::array_t<I> indices(nnz);
  auto fill = [&](auto tag) -> py::array {
    using V = decltype(tag);
    py::array_t<V> data(nnz);
    I* ind = indices.mutable_data();
    V* val = data.mutable_data();
    recsketch_bind::without_gil(
        [&] { recsketch::block_sparse_fill_csc<I, V>(R, ip, ind, val, num_threads, d); });
    return std::move(data);
  };
  py::array data = f64 ? fill(double{}) : fill(float{});
  return py::make_tuple(data, indices, indptr);
}

// column_counts' and csc's count of each column's blocks (one int64 each).
void check_counts_bytes(std::int64_t cols, const char* call) {
  recsketch_bind::check_alloc(recsketch_bind::mul_bytes(static_cast<std::uint64_t>(cols), 8),
                              std::string(call) + "(columns=" + std::to_string(cols) +
                                  "): a count of 8 bytes per column");
}

}  // namespace

void register_matrices(py::module_& m) {
  py::class_<BlockSparseMatrix> block_sparse(m, "BlockSparseMatrix");
  block_sparse
      .def(py::init([](const py::object& family_arg, const py::object& seed,
                       const py::object& key) {
             if (!py::isinstance<BlockSparseFamily>(family_arg))
               throw py::type_error("family must be a BlockSparseFamily, got " +
                                    recsketch_bind::type_name(family_arg));
             family_arg.cast<const BlockSparseFamily&>();  // TypeError if never initialised
             auto family = family_arg.cast<std::shared_ptr<const BlockSparseFamily>>();
             return std::make_unique<BlockSparseMatrix>(
                 std::move(family), recsketch_bind::int_arg<std::uint64_t>(seed, "seed"),
                 recsketch_bind::int_arg<std::uint64_t>(key, "key"));
           }),
           py::arg("family"), py::arg("seed"), py::arg("key"))
      .def_property_readonly("seed", &BlockSparseMatrix::seed)
      .def_property_readonly("key", &BlockSparseMatrix::key)
      // (b, q) of the family, so that a matrix can be pickled as its generating parameters.
      .def_property_readonly("block_size",
                             [](const BlockSparseMatrix& R) { return R.family().block_size(); })
      .def_property_readonly("density",
                             [](const BlockSparseMatrix& R) { return R.family().density(); })
      .def(
          "apply",
          [](const BlockSparseMatrix& R, const py::array& x, const py::object& transpose_arg,
             const py::object& half_arg, const py::object& num_threads_arg) {
            const bool transpose = recsketch_bind::flag_arg(transpose_arg, "transpose");
            const bool half = recsketch_bind::flag_arg(half_arg, "half");
            const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
            return apply_checked(R.family().d(), x, transpose, half,
                                 [&](std::int64_t n, std::int64_t cols) {
                                   return recsketch::block_sparse_scratch_bytes(
                                       R.family(), n, cols, transpose, num_threads);
                                 },
                                 [&](auto* src, std::int64_t n, std::int64_t cols, auto* dst) {
                                   if (transpose)
                                     recsketch::block_sparse_transpose(R, src, n, dst, half,
                                                                       num_threads);
                                   else
                                     recsketch::block_sparse_forward(R, src, n, cols, dst, half,
                                                                     num_threads);
                                 });
          },
          py::arg("x"), py::arg("transpose") = false, py::arg("half") = false,
          py::arg("num_threads") = 0)
      .def(
          "column_counts",
          [](const BlockSparseMatrix& R, const py::object& num_threads_arg,
             const py::object& columns) {
            const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
            const std::int64_t cols = columns_arg(R, columns);
            check_counts_bytes(cols, "column_counts");
            py::array_t<std::int64_t> counts(cols);
            std::int64_t* p = counts.mutable_data();
            recsketch_bind::without_gil(
                [&] { recsketch::block_sparse_column_counts(R, p, num_threads, cols); });
            return counts;
          },
          py::arg("num_threads") = 0, py::arg("columns") = -1,
          "Number of nonzero blocks of each of the first `columns` columns (-1: all).")
      .def(
          "csc",
          [](const BlockSparseMatrix& R, const py::object& float64,
             const py::object& num_threads_arg, const py::object& columns) {
            const bool f64 = recsketch_bind::flag_arg(float64, "float64");
            const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
            const std::int64_t cols = columns_arg(R, columns);
            check_counts_bytes(cols, "csc");
            std::vector<std::int64_t> counts(static_cast<std::size_t>(cols));
            recsketch_bind::without_gil([&] {
              recsketch::block_sparse_column_counts(R, counts.data(), num_threads, cols);
            });
            std::int64_t nnz = 0;
            for (std::int64_t c : counts) nnz += c * R.family().block_size();
            // 32-bit indices when they fit, as SciPy would choose them.
            // (csc_arrays checks the arrays against the allocation limit)
            return nnz < 2147483647 ? csc_arrays<std::int32_t>(R, counts, f64, num_threads)
                                    : csc_arrays<std::int64_t>(R, counts, f64, num_threads);
          },
          py::arg("float64") = true, py::arg("num_threads") = 0,
          py::arg("columns") = -1,
          "(data, indices, indptr) of the matrix's first `columns` columns (-1: all) in CSC "
          "form.")
      .def(
          "dense",
          [](const BlockSparseMatrix& R, const py::object& num_threads_arg) {
            const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
            const std::int64_t d = R.family().d();
            recsketch_bind::check_alloc(
                recsketch_bind::mul_bytes(recsketch_bind::mul_bytes(d, d), 8),
                "dense(): a " + std::to_string(d) + " x " + std::to_string(d) + " float64 matrix");
            py::array_t<double> out({d, d});
            double* p = out.mutable_data();
            recsketch_bind::without_gil([&] {
              std::fill(p, p + d * d, 0.0);
              recsketch::block_sparse_fill_dense(R, p, num_threads);
            });
            return out;
          },
          py::arg("num_threads") = 0,
          "The matrix as a dense d x d float64 array, written in place (no sparse form in "
          "between).")
      .def("signature",
           [](const BlockSparseMatrix& R) {
             return sign_array<std::int8_t>(R.signature_bits(), R.family().third());
           })
      .def(
          "random_string",
          [](const BlockSparseMatrix& R, const py::object& column) {
            const auto j = recsketch_bind::int_arg<std::int64_t>(column, "column");
            if (j < 0 || j >= R.family().d())
              throw std::invalid_argument("column must be in [0, " +
                                          std::to_string(R.family().d()) + "), got " +
                                          std::to_string(j));
            std::vector<std::uint64_t> bits(static_cast<std::size_t>((R.family().third() + 63) / 64));
            R.random_string_bits(j, bits.data());
            return sign_array<std::int8_t>(bits.data(), R.family().third());
          },
          py::arg("column"));
  recsketch_bind::refuse_second_init(block_sparse);

  py::class_<OrthogonalMatrix> orthogonal(m, "OrthogonalMatrix");
  orthogonal
      .def(py::init([](const py::object& d, const py::object& seed, const py::object& key) {
             return std::make_unique<OrthogonalMatrix>(
                 recsketch_bind::int_arg<std::int64_t>(d, "d_sketch"),
                 recsketch_bind::int_arg<std::uint64_t>(seed, "seed"),
                 recsketch_bind::int_arg<std::uint64_t>(key, "key"));
           }),
           py::arg("d_sketch"), py::arg("seed"), py::arg("key"))
      .def_property_readonly("seed", &OrthogonalMatrix::seed)
      .def_property_readonly("key", &OrthogonalMatrix::key)
      .def(
          "apply",
          [](const OrthogonalMatrix& R, const py::array& x, const py::object& transpose_arg,
             const py::object& half_arg, const py::object& num_threads_arg) {
            const bool transpose = recsketch_bind::flag_arg(transpose_arg, "transpose");
            const bool half = recsketch_bind::flag_arg(half_arg, "half");
            const int num_threads = recsketch_bind::num_threads_arg(num_threads_arg);
            return apply_checked(R.d(), x, transpose, half,
                                 [&](std::int64_t n, std::int64_t) {
                                   return recsketch::orthogonal_scratch_bytes(R.d(), n,
                                                                              num_threads);
                                 },
                                 [&](auto* src, std::int64_t n, std::int64_t cols, auto* dst) {
                                   recsketch::orthogonal_apply(R, src, n, cols, dst, transpose,
                                                               half, num_threads);
                                 });
          },
          py::arg("x"), py::arg("transpose") = false, py::arg("half") = false,
          py::arg("num_threads") = 0)
      .def(
          "signs",
          [](const OrthogonalMatrix& R, const py::object& round_arg) {
            const auto round = recsketch_bind::int_arg<std::int64_t>(round_arg, "round");
            if (round < 1 || round > 3)
              throw std::invalid_argument("round must be 1, 2 or 3, got " + std::to_string(round));
            recsketch_bind::check_alloc(
                static_cast<std::uint64_t>(R.d()) + static_cast<std::uint64_t>(R.d()) / 8 + 8,
                "signs(): " + std::to_string(R.d()) + " signs (one byte each)");
            std::vector<std::uint64_t> bits(static_cast<std::size_t>((R.d() + 63) / 64));
            R.sign_bits(static_cast<int>(round), bits.data());
            return sign_array<std::int8_t>(bits.data(), R.d());
          },
          py::arg("round"));
  recsketch_bind::refuse_second_init(orthogonal);
}
