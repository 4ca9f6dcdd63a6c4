// Parameters of D(b, q, d), Enc (Algorithm 1) and the block decoder of Section 4.2.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "alloc_limit.hpp"
#include "arrays.hpp"
#include "initialized.hpp"
#include "recsketch/block_sparse.hpp"
#include "recsketch/enc.hpp"
#include "recsketch/walk_cache.hpp"

namespace py = pybind11;
using recsketch::BlockSparseFamily;

void register_block_sparse(py::module_& m) {
  auto check_d = [](const py::object& d_arg) {
    const auto d = recsketch_bind::int_arg<std::int64_t>(d_arg, "d_sketch");
    if (d < 1 || d > recsketch::kMaxDSketch)
      throw std::invalid_argument("d_sketch must be in [1, 2^31 - 1], got " + std::to_string(d));
    return d;
  };
  m.def("min_block_size",
        [=](const py::object& d) { return recsketch::min_block_size(check_d(d)); },
        py::arg("d_sketch"));
  m.def("paper_density",
        [=](const py::object& d) { return recsketch::paper_density(check_d(d)); },
        py::arg("d_sketch"));
  m.def("ceil_log2", [](const py::object& n_arg) {
    const auto n = recsketch_bind::int_arg<std::int64_t>(n_arg, "n");
    if (n < 1) throw std::invalid_argument("ceil_log2 needs n >= 1, got " + std::to_string(n));
    return recsketch::ceil_log2(n);
  }, py::arg("n"));

  py::class_<BlockSparseFamily, std::shared_ptr<BlockSparseFamily>> family(m, "BlockSparseFamily");
  family
      .def(py::init([](const py::object& d, const py::object& b, const py::object& q) {
             return std::make_shared<BlockSparseFamily>(
                 recsketch_bind::int_arg<std::int64_t>(d, "d_sketch"),
                 recsketch_bind::int_arg<std::int64_t>(b, "block_size"),
                 recsketch_bind::real_arg(q, "density"));
           }),
           py::arg("d_sketch"), py::arg("block_size"), py::arg("density"))
      .def_property_readonly("d_sketch", &BlockSparseFamily::d)
      .def_property_readonly("block_size", &BlockSparseFamily::block_size)
      .def_property_readonly("density", &BlockSparseFamily::density)
      .def_property_readonly("n_blocks", &BlockSparseFamily::n_blocks)
      .def_property_readonly("index_bits", &BlockSparseFamily::index_bits)
      .def_property_readonly("scale", &BlockSparseFamily::scale)
      .def(
          "gap",
          [](const BlockSparseFamily& f, const py::object& u) {
            return f.gap(recsketch_bind::int_arg<std::uint32_t>(u, "u32"));
          },
          py::arg("u32"));
  recsketch_bind::refuse_second_init(family);

  m.def(
      "enc_pattern",
      [](const py::object& column, const py::object& b_m_arg, const py::object& b_s_arg,
         const py::object& d_arg, const py::object& b_arg) {
        const auto j = recsketch_bind::int_arg<std::int64_t>(column, "column");
        const auto b_m = recsketch_bind::int_arg<int>(b_m_arg, "b_m");
        const auto b_s = recsketch_bind::int_arg<int>(b_s_arg, "b_s");
        const auto d = recsketch_bind::int_arg<std::int64_t>(d_arg, "d_sketch");
        const auto b = recsketch_bind::int_arg<std::int64_t>(b_arg, "block_size");
        recsketch::validate_block_sparse(d, b, 1.0);
        if (j < 0 || j >= d)
          throw std::invalid_argument("column " + std::to_string(j) + " is outside [0, d_sketch)");
        if ((b_m != 1 && b_m != -1) || (b_s != 1 && b_s != -1))
          throw std::invalid_argument("parity bits b_m, b_s must be +1 or -1");
        py::array_t<std::int8_t> out(b / 3);
        recsketch::enc_pattern(j, b_m, b_s, recsketch::ceil_log2(d), b / 3, out.mutable_data());
        return out;
      },
      py::arg("column"), py::arg("b_m"), py::arg("b_s"), py::arg("d_sketch"), py::arg("block_size"));

  m.def(
      "decode_blocks",
      [](const py::object& blocks, const py::object& d_arg) {
        const auto d = recsketch_bind::int_arg<std::int64_t>(d_arg, "d_sketch");
        // The shape before the conversion: a view that is wrong (say 2^62 columns broadcast
        // from one byte) is refused, not copied. The conversion is NumPy's safe casting.
        if (py::isinstance<py::array>(blocks)) {
          const auto a = py::reinterpret_borrow<py::array>(blocks);
          if (a.ndim() != 2)
            throw std::invalid_argument("blocks must be a 2-D (n, block_size) int8 array");
          recsketch::validate_block_sparse(d, a.shape(1), 1.0);
        }
        // A view that is not C-contiguous int8 is copied: its rows times its width, bounded
        // by the allocation limit (a broadcast of 2^40 rows is one row in memory).
        if (py::isinstance<py::array>(blocks)) {
          const auto a = py::reinterpret_borrow<py::array>(blocks);
          if (!a.dtype().is(py::dtype::of<std::int8_t>()) || !(a.flags() & py::array::c_style))
            recsketch_bind::check_alloc(
                recsketch_bind::mul_bytes(static_cast<std::uint64_t>(a.shape(0)),
                                          static_cast<std::uint64_t>(a.shape(1))),
                "decode_blocks: copying blocks (" + std::to_string(a.shape(0)) + " rows of " +
                    std::to_string(a.shape(1)) + ") to C-contiguous int8");
        }
        const py::array_t<std::int8_t, py::array::c_style> u(blocks);
        if (u.ndim() != 2)
          throw std::invalid_argument("blocks must be a 2-D (n, block_size) int8 array");
        const std::int64_t n = u.shape(0), b = u.shape(1);
        recsketch::validate_block_sparse(d, b, 1.0);
        // four int8 and one int64 per block
        recsketch_bind::check_alloc(
            recsketch_bind::mul_bytes(12, static_cast<std::uint64_t>(n)),
            "decode_blocks: the decoding of " + std::to_string(n) + " blocks (12 bytes each)");
        py::array_t<std::int8_t> status(n), b_m(n), b_s(n), sign(n);
        py::array_t<std::int64_t> column(n);
        const int L = recsketch::ceil_log2(d);
        const std::int8_t* src = u.data();
        auto st = status.mutable_unchecked<1>();
        auto bm = b_m.mutable_unchecked<1>();
        auto bs = b_s.mutable_unchecked<1>();
        auto sg = sign.mutable_unchecked<1>();
        auto col = column.mutable_unchecked<1>();
        recsketch_bind::without_gil([&] {
          for (std::int64_t k = 0; k < n; ++k) {
            const auto r = recsketch::decode_block(src + k * b, b, L, d);
            st(k) = static_cast<std::int8_t>(r.status);
            col(k) = r.column;
            bm(k) = static_cast<std::int8_t>(r.b_m);
            bs(k) = static_cast<std::int8_t>(r.b_s);
            sg(k) = static_cast<std::int8_t>(r.sign);
          }
        });
        return py::make_tuple(status, column, b_m, b_s, sign);
      },
      py::arg("blocks"), py::arg("d_sketch"));

  m.def(
      "walk_cache_info",
      [] {
        const auto info = recsketch::WalkCache::global().info();
        py::dict out;
        out["bytes"] = info.bytes;
        out["limit"] = info.limit;
        out["matrices"] = info.matrices;
        out["hits"] = info.hits;
        out["misses"] = info.misses;
        return out;
      },
      "Resident bytes, limit, cached matrices, hits and misses of the block-walk cache.");
  m.def(
      "set_walk_cache_limit",
      [](const py::object& bytes_arg) {
        const auto bytes = recsketch_bind::int_arg<std::uint64_t>(bytes_arg, "bytes");
        recsketch::WalkCache::global().set_limit(static_cast<std::size_t>(bytes));
      },
      py::arg("bytes"));
  m.def("clear_walk_cache", [] { recsketch::WalkCache::global().clear(); });
}
