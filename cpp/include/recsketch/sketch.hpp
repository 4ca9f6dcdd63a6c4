// The recursive sketch of a communication DAG (paper Section 3.3), computed in one call:
//
//   P(R) v      = (v + R v) / 2
//   s_attr      = R[M,1] x / 2 + R[M,2] e_1 / 2
//   s_input     = sum_i w_i P(R[i]) s_object(child_i)            (i = 1-based input position)
//   s_object    = P(R[M,0]) ( P(R[1]) s_attr / 2 + P(R[2]) s_input / 2 )
//   s_overall   = s_input(output pseudo-object)
//
// Graphs arrive flattened: "rows" are objects in topological order (children before parents),
// each graph closed by its output row. Every sum runs in float64 in a fixed order, and the matrix
// kernels do not depend on the thread count, so a graph gets the same bits alone or in a batch.
//
// Attribute embeddings. The part of s_object that comes from the object's own attributes is
// linear in [x; 1] (k + 1 numbers): A_M [x; 1] with A_M = P(R[M,0]) P(R[1]) [R[M,1] e_1 ..
// R[M,1] e_k, R[M,2] e_1] / 4. When the caller supplies A_M (a dense (k + 1) x d matrix, worth
// it for short attributes), a leaf object costs one small dense product instead of three sparse
// ones; with D_{M,i} = P(R[i]) A_M, so does a leaf's edge into position i of its parent. Which
// path a row takes depends only on the module, its attribute length and the graph, never on
// caches, so the bits stay a function of (seed, graph).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "matrix_ref.hpp"
#include "parallel.hpp"

namespace recsketch {

// Matrices of one sketching call: the three matrices of every module in use and the position
// matrices R[1..max_fan_in] (R[1], R[2] are always present: they are the object-tuple slots).
struct MatrixBank {
  std::vector<std::array<MatrixRef, 3>> modules;
  std::vector<MatrixRef> positions;  // positions[i - 1] is R[i]
  // Optional, per module: A_M, row-major (k_M + 1) x d; null to take the sparse path.
  std::vector<const double*> attr_embed;
  std::vector<std::int64_t> embed_k;  // k_M of each embedded module (rows of A_M minus one)
  // Optional, per module and position: D_{M,i} at edge_embed[M * positions.size() + i - 1].
  std::vector<const double*> edge_embed;
};

// A batch of flattened graphs. Graph g owns rows [graph_ptr[g], graph_ptr[g + 1]); its last row
// is the output pseudo-object (module -1, no attributes). Row r has attributes
// attr[attr_ptr[r] .. attr_ptr[r + 1]) and inputs input_ptr[r] .. input_ptr[r + 1], each a row
// index input_row[k] < r of the same graph with weight input_weight[k]; the input's position is
// its rank in that list, from 1.
struct GraphBatch {
  std::int64_t n_graphs = 0;
  const std::int64_t* graph_ptr = nullptr;
  const std::int32_t* module = nullptr;
  const std::int64_t* attr_ptr = nullptr;
  const double* attr = nullptr;
  const std::int64_t* input_ptr = nullptr;
  const std::int64_t* input_row = nullptr;
  const double* input_weight = nullptr;
};

namespace detail {

// Checks the indices of a batch against the bank (the Python layer validates the mathematics;
// this guards memory safety against a malformed call).
inline void check_batch(const GraphBatch& g, const MatrixBank& bank, std::int64_t d) {
  const auto n_modules = static_cast<std::int64_t>(bank.modules.size());
  const auto n_positions = static_cast<std::int64_t>(bank.positions.size());
  if (n_positions < 2 || !bank.positions[0].valid() || !bank.positions[1].valid())
    throw std::invalid_argument("the bank needs position matrices R[1] and R[2]");
  for (const auto& p : bank.positions)
    if (!p.valid() || p.d() != d) throw std::invalid_argument("position matrix missing or wrong size");
  for (const auto& m : bank.modules)
    for (const auto& r : m)
      if (!r.valid() || r.d() != d) throw std::invalid_argument("module matrix missing or wrong size");
  if (!bank.attr_embed.empty() && (bank.attr_embed.size() != bank.modules.size() ||
                                   bank.embed_k.size() != bank.modules.size()))
    throw std::invalid_argument("attr_embed and embed_k need one entry per module");
  if (!bank.edge_embed.empty() && bank.edge_embed.size() != bank.modules.size() * bank.positions.size())
    throw std::invalid_argument("edge_embed needs one entry per module and position");
  if (g.graph_ptr[0] != 0) throw std::invalid_argument("graph_ptr must start at 0");
  if (g.n_graphs > 0 && (g.attr_ptr[0] != 0 || g.input_ptr[0] != 0))
    throw std::invalid_argument("attr_ptr and input_ptr must start at 0");
  const std::int64_t rows = g.graph_ptr[g.n_graphs];
  for (std::int64_t k = 0; k < g.n_graphs; ++k) {
    const std::int64_t r0 = g.graph_ptr[k], r1 = g.graph_ptr[k + 1];
    if (r1 <= r0) throw std::invalid_argument("every graph needs an output row");
    if (r1 > rows) throw std::invalid_argument("graph_ptr points past the last row");
    for (std::int64_t r = r0; r < r1; ++r) {
      const bool is_output = r == r1 - 1;
      const std::int32_t mod = g.module[r];
      if (is_output ? mod != -1 : (mod < 0 || mod >= n_modules))
        throw std::invalid_argument("row " + std::to_string(r) + " has a bad module index");
      const std::int64_t len = g.attr_ptr[r + 1] - g.attr_ptr[r];
      if (len < 0 || len > d || (is_output && len != 0) || (!is_output && len == 0))
        throw std::invalid_argument("row " + std::to_string(r) + " has a bad attribute length");
      if (!is_output && !bank.attr_embed.empty() &&
          bank.embed_k[static_cast<std::size_t>(mod)] >= 0 &&
          bank.embed_k[static_cast<std::size_t>(mod)] != len)
        throw std::invalid_argument("row " + std::to_string(r) + " does not match its module's embedding");
      const std::int64_t fan_in = g.input_ptr[r + 1] - g.input_ptr[r];
      if (fan_in < 0 || fan_in > n_positions)
        throw std::invalid_argument("row " + std::to_string(r) + " has more inputs than positions");
      for (std::int64_t e = g.input_ptr[r]; e < g.input_ptr[r + 1]; ++e)
        if (g.input_row[e] < r0 || g.input_row[e] >= r)
          throw std::invalid_argument("row " + std::to_string(r) + " has an input that is not an earlier row");
    }
  }
}

// out += w * P(R) x  (tmp is scratch of length d)
inline void add_half(const MatrixRef& R, double w, const double* x, double* out, double* tmp,
                     std::int64_t d, int threads) {
  R.forward(x, 1, d, tmp, true, threads);
  for (std::int64_t k = 0; k < d; ++k) out[k] += w * tmp[k];
}

// out += w * E [x; 1] for an embedding E ((k + 1) x d, row-major), rows added in order.
inline void add_embedded(const double* E, const double* x, std::int64_t k, double w, double* out,
                         std::int64_t d) {
  for (std::int64_t c = 0; c <= k; ++c) {
    const double coef = w * (c < k ? x[c] : 1.0);
    const double* row = E + c * d;
    for (std::int64_t t = 0; t < d; ++t) out[t] += coef * row[t];
  }
}

// Sketches graph k. Each row's object sketch lives only until its last parent has used it
// (a graph of many objects needs memory for its frontier, not for all of them); a row is
// handed to emit(row, sketch) as soon as it is computed, the output row last (s_overall).
template <class Emit>
void sketch_one(const GraphBatch& g, const MatrixBank& bank,
                const std::vector<std::vector<double>>& e1_columns, std::int64_t k,
                std::int64_t d, int threads, Emit&& emit) {
  const std::int64_t r0 = g.graph_ptr[k], r1 = g.graph_ptr[k + 1];
  std::vector<std::int64_t> last_use(static_cast<std::size_t>(r1 - r0), -1);
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t e = g.input_ptr[r]; e < g.input_ptr[r + 1]; ++e)
      last_use[static_cast<std::size_t>(g.input_row[e] - r0)] = r;
  std::vector<std::vector<double>> obj(static_cast<std::size_t>(r1 - r0));
  std::vector<double> attr(static_cast<std::size_t>(d)), input(static_cast<std::size_t>(d)),
      tuple(static_cast<std::size_t>(d)), tmp(static_cast<std::size_t>(d));
  const std::size_t n_pos = bank.positions.size();
  auto is_leaf = [&](std::int64_t row) { return g.input_ptr[row + 1] == g.input_ptr[row]; };
  for (std::int64_t r = r0; r < r1; ++r) {
    auto& mine = obj[static_cast<std::size_t>(r - r0)];
    mine.assign(static_cast<std::size_t>(d), 0.0);
    double* self = mine.data();
    const bool is_output = r == r1 - 1;
    // s_input: the weighted tuple of the inputs' object sketches.
    double* in = is_output ? self : input.data();
    std::fill(in, in + d, 0.0);
    const std::int64_t in0 = g.input_ptr[r], in1 = g.input_ptr[r + 1];
    for (std::int64_t e = in0; e < in1; ++e) {
      const std::int64_t child = g.input_row[e];
      const auto m = static_cast<std::size_t>(g.module[child]);
      const double* D = bank.edge_embed.empty() ? nullptr
                                                : bank.edge_embed[m * n_pos + static_cast<std::size_t>(e - in0)];
      if (D && is_leaf(child))
        add_embedded(D, g.attr + g.attr_ptr[child], g.attr_ptr[child + 1] - g.attr_ptr[child],
                     g.input_weight[e], in, d);
      else
        add_half(bank.positions[static_cast<std::size_t>(e - in0)], g.input_weight[e],
                 obj[static_cast<std::size_t>(child - r0)].data(), in, tmp.data(), d, threads);
    }
    for (std::int64_t e = in0; e < in1; ++e) {  // children this row was the last to need
      const auto c = static_cast<std::size_t>(g.input_row[e] - r0);
      if (last_use[c] == r) std::vector<double>().swap(obj[c]);
    }
    if (is_output) {
      emit(r, self);
      break;
    }

    const auto m = static_cast<std::size_t>(g.module[r]);
    const auto& mats = bank.modules[m];
    const std::int64_t a0 = g.attr_ptr[r], len = g.attr_ptr[r + 1] - a0;
    const double* A = bank.attr_embed.empty() ? nullptr : bank.attr_embed[m];
    if (A) {
      // s_object = A_M [x; 1] + P(R[M,0]) P(R[2]) s_input / 2
      std::fill(self, self + d, 0.0);
      add_embedded(A, g.attr + a0, len, 1.0, self, d);
      if (in1 > in0) {
        bank.positions[1].forward(input.data(), 1, d, tuple.data(), true, threads);
        add_half(mats[0], 0.5, tuple.data(), self, tmp.data(), d, threads);
      }
    } else {
      mats[1].forward(g.attr + a0, 1, len, attr.data(), false, threads);
      const double* col0 = e1_columns[m].data();
      for (std::int64_t c = 0; c < d; ++c) attr[c] = 0.5 * attr[c] + 0.5 * col0[c];
      std::fill(tuple.begin(), tuple.end(), 0.0);
      add_half(bank.positions[0], 0.5, attr.data(), tuple.data(), tmp.data(), d, threads);
      if (in1 > in0)
        add_half(bank.positions[1], 0.5, input.data(), tuple.data(), tmp.data(), d, threads);
      mats[0].forward(tuple.data(), 1, d, self, true, threads);
    }
    emit(r, self);
    if (last_use[static_cast<std::size_t>(r - r0)] < 0) std::vector<double>().swap(mine);
  }
}

}  // namespace detail

// Sketches every graph of the batch: overall (n_graphs x d) receives s_overall, and objects
// (total rows x d, or null) every row's object sketch (output rows: s_overall again).
template <class T>
void sketch_graphs(const GraphBatch& g, const MatrixBank& bank, std::int64_t d, T* overall,
                   T* objects, int num_threads) {
  detail::check_batch(g, bank, d);
  // R[M,2] e_1 is the same vector for every object of M: compute it once per call (embedded
  // modules carry it inside A_M already).
  std::vector<std::vector<double>> e1_columns(bank.modules.size());
  const double one = 1.0;
  for (std::size_t m = 0; m < bank.modules.size(); ++m) {
    if (!bank.attr_embed.empty() && bank.attr_embed[m]) continue;
    e1_columns[m].resize(static_cast<std::size_t>(d));
    bank.modules[m][2].forward(&one, 1, 1, e1_columns[m].data(), false, 1);
  }
  // Threads across graphs when there are enough of them, else inside each product; the kernels
  // give the same bits either way.
  const int threads = resolve_threads(num_threads);
  const bool across = g.n_graphs >= threads;
  auto run = [&](std::int64_t k) {
    const std::int64_t output_row = g.graph_ptr[k + 1] - 1;
    detail::sketch_one(g, bank, e1_columns, k, d, across ? 1 : threads,
                       [&](std::int64_t r, const double* v) {
                         if (objects)
                           for (std::int64_t c = 0; c < d; ++c)
                             objects[r * d + c] = static_cast<T>(v[c]);
                         if (r == output_row)
                           for (std::int64_t c = 0; c < d; ++c)
                             overall[k * d + c] = static_cast<T>(v[c]);
                       });
  };
  if (across)
    parallel_for(g.n_graphs, threads, run);
  else
    for (std::int64_t k = 0; k < g.n_graphs; ++k) run(k);
}

}  // namespace recsketch
