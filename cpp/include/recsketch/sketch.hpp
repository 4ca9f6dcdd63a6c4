// The recursive sketch of a communication DAG (paper Section 3.3), computed in one call:
//
//   P(R) v      = (v + R v) / 2
//   s_attr      = R[M,1] x / 2 + R[M,2] e_1 / 2
//   s_input     = sum_i w_i P(R[i]) s_object(child_i)            (i = 1-based input position)
//   s_object    = P(R[M,0]) ( P(R[1]) s_attr / 2 + P(R[2]) s_input / 2 )
//   s_overall   = s_input(output pseudo-object)
//
// Graphs arrive flattened: "rows" are objects in topological order (children before parents),
// each graph closed by its output row. Every sum runs in a fixed order, in the output's dtype
// (object sketches of a float32 call are float32: the block-sparse kernels run twice as fast on
// them and float32 keeps ~1e-7 relative error per step of a recursion a few levels deep), and the
// matrix kernels do not depend on the thread count, so a graph gets the same bits alone or in a
// batch.
//
// Level-synchronous schedule. Objects are processed level by level from the leaves (level 0: no
// inputs; level l: one more than its deepest input), all graphs of a call together. Within a
// level every product that shares a matrix is one batched product: P(R[i]) over all edges at
// position i, P(R[1]) and P(R[2]) over all objects, R[M,1], R[M,2] e_1 and P(R[M,0]) over the
// objects of module M. The matrix kernels give a vector the same bits alone or in a batch
// (block_sparse_kernels.hpp, orthogonal.hpp), and every sum over a row's inputs runs in
// position order exactly as the object-by-object recursion wrote it, so the schedule changes
// no bit: a sketch is a function of (seed, graph), whatever the batch, its order or the thread
// count. Memory: an object sketch lives from its level until the level of its last parent;
// a level is processed in slices whose scratch stays under a working budget, and a large
// batch is cut into groups of graphs whose object sketches fit the same budget (cuts change
// which products are batched together, never a bit).
//
// Leaf embeddings. A leaf's object sketch is linear in [x; 1]: A_M [x; 1] with
// A_M = P(R[M,0]) P(R[1]) [R[M,1] e_1 .. R[M,1] e_k, R[M,2] e_1] / 4, a (k + 1) x d matrix.
// A row flagged `embedded` is computed as that dense product (rows added in order) instead of
// its products. Which rows are flagged is the caller's choice and must depend only on the
// row's own graph (python/recsketch/embeddings.py decides per graph), so bits still do not
// depend on the batch.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bytes.hpp"
#include "matrix_ref.hpp"
#include "parallel.hpp"

namespace recsketch {

// Matrices of one sketching call: the three matrices of every module in use and the position
// matrices R[1..max_fan_in] (R[1], R[2] are always present: they are the object-tuple slots).
struct MatrixBank {
  std::vector<std::array<MatrixRef, 3>> modules;
  std::vector<MatrixRef> positions;  // positions[i - 1] is R[i]
  // Optional, per module: the leaf embedding A_M, row-major (k_M + 1) x d (null if none).
  std::vector<const double*> leaf_embed;
  std::vector<std::int64_t> leaf_embed_k;  // k_M of each embedding (its rows minus one)
};

// A batch of flattened graphs. Graph g owns rows [graph_ptr[g], graph_ptr[g + 1]); its last row
// is the output pseudo-object (module -1, no attributes). Row r has attributes
// attr[attr_ptr[r] .. attr_ptr[r + 1]) and inputs input_ptr[r] .. input_ptr[r + 1], each a row
// index input_row[k] < r of the same graph with weight input_weight[k]; the input's position is
// its rank in that list, from 1.
struct GraphBatch {
  std::int64_t n_graphs = 0;
  std::int64_t rows = 0;  // length of module; graph_ptr[n_graphs] must equal it
  const std::int64_t* graph_ptr = nullptr;
  const std::int32_t* module = nullptr;
  const std::int64_t* attr_ptr = nullptr;
  const double* attr = nullptr;
  const std::int64_t* input_ptr = nullptr;
  const std::int64_t* input_row = nullptr;
  const double* input_weight = nullptr;
  // Optional, per row: 1 if the row is a leaf sketched through its module's leaf embedding.
  const std::uint8_t* embedded = nullptr;
};


// Working memory a call may use beyond its outputs, for object sketches in flight and scratch
// (a single graph whose frontier alone is larger still gets sketched, with its frontier).
inline constexpr std::size_t kSketchWorkingBytes = std::size_t{256} << 20;

namespace detail {

// Checks the indices of a batch against the bank (the Python layer validates the mathematics;
// this guards memory safety against a malformed call). graph_ptr is checked before any row is
// read, so a bad one cannot send the row checks out of bounds.
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
  if (g.n_graphs < 0) throw std::invalid_argument("graph_ptr is empty");
  if (g.graph_ptr[0] != 0) throw std::invalid_argument("graph_ptr must start at 0");
  for (std::int64_t k = 0; k < g.n_graphs; ++k)
    if (g.graph_ptr[k + 1] <= g.graph_ptr[k] || g.graph_ptr[k + 1] > g.rows)
      throw std::invalid_argument("graph_ptr must increase (every graph needs an output row) "
                                  "and stay within the rows");
  if (g.graph_ptr[g.n_graphs] != g.rows)
    throw std::invalid_argument("graph_ptr must end at the number of rows");
  if (g.n_graphs > 0 && (g.attr_ptr[0] != 0 || g.input_ptr[0] != 0))
    throw std::invalid_argument("attr_ptr and input_ptr must start at 0");
  for (std::int64_t k = 0; k < g.n_graphs; ++k) {
    const std::int64_t r0 = g.graph_ptr[k], r1 = g.graph_ptr[k + 1];
    for (std::int64_t r = r0; r < r1; ++r) {
      const bool is_output = r == r1 - 1;
      const std::int32_t mod = g.module[r];
      if (is_output ? mod != -1 : (mod < 0 || mod >= n_modules))
        throw std::invalid_argument("row " + std::to_string(r) + " has a bad module index");
      const std::int64_t len = g.attr_ptr[r + 1] - g.attr_ptr[r];
      if (len < 0 || len > d || (is_output && len != 0) || (!is_output && len == 0))
        throw std::invalid_argument("row " + std::to_string(r) + " has a bad attribute length");
      const std::int64_t fan_in = g.input_ptr[r + 1] - g.input_ptr[r];
      if (fan_in < 0 || fan_in > n_positions)
        throw std::invalid_argument("row " + std::to_string(r) + " has more inputs than positions");
      for (std::int64_t e = g.input_ptr[r]; e < g.input_ptr[r + 1]; ++e)
        if (g.input_row[e] < r0 || g.input_row[e] >= r)
          throw std::invalid_argument("row " + std::to_string(r) + " has an input that is not an earlier row");
    }
  }
  if (!bank.leaf_embed.empty() && (bank.leaf_embed.size() != bank.modules.size() ||
                                   bank.leaf_embed_k.size() != bank.modules.size()))
    throw std::invalid_argument("leaf_embed needs one entry per module");
  if (g.embedded)
    for (std::int64_t r = 0; r < g.rows; ++r) {
      if (!g.embedded[r]) continue;
      const std::int32_t mod = g.module[r];
      if (mod < 0 || g.input_ptr[r + 1] != g.input_ptr[r] || bank.leaf_embed.empty() ||
          !bank.leaf_embed[static_cast<std::size_t>(mod)] ||
          bank.leaf_embed_k[static_cast<std::size_t>(mod)] != g.attr_ptr[r + 1] - g.attr_ptr[r])
        throw std::invalid_argument("row " + std::to_string(r) + " is flagged embedded but is not "
                                    "a leaf of a module with a matching embedding");
    }
  // One attribute length per module: a module's objects share R[M,1]'s batched product.
  std::vector<std::int64_t> dim(static_cast<std::size_t>(n_modules), -1);
  for (std::int64_t r = 0; r < g.rows; ++r) {
    if (g.module[r] < 0) continue;
    auto& k = dim[static_cast<std::size_t>(g.module[r])];
    const std::int64_t len = g.attr_ptr[r + 1] - g.attr_ptr[r];
    if (k >= 0 && k != len)
      throw std::invalid_argument("row " + std::to_string(r) + " has another attribute length "
                                  "than earlier objects of its module");
    k = len;
  }
}

// out += A [x; 1] for an embedding A ((k + 1) x d, row-major), rows added in order.
inline void add_embedded(const double* A, const double* x, std::int64_t k, double* out,
                         std::int64_t d) {
  for (std::int64_t c = 0; c <= k; ++c) {
    const double coef = c < k ? x[c] : 1.0;
    const double* row = A + c * d;
    for (std::int64_t t = 0; t < d; ++t) out[t] += coef * row[t];
  }
}

// Work of one stage of a level: independent tasks, each told how many threads it may use.
using Tasks = std::vector<std::function<void(int)>>;

// Vectors per product task at most: enough panels for a warm matrix to stream, few enough
// that a level's big products spread over the threads.
inline constexpr std::int64_t kVectorsPerTask = 64;

// Queues y = R x (or P(R) x if half) for the n rows of x (n x m) as tasks of whole panels
// (multiples of 8 vectors), at most kVectorsPerTask each and, when there are vectors enough,
// at least one per thread. The kernels give every vector the same bits whatever the split.
template <class T>
void queue_product(Tasks& tasks, const MatrixRef& R, const T* x, std::int64_t n, std::int64_t m,
                   T* y, bool half, std::int64_t d, int threads) {
  if (n <= 0) return;
  const std::int64_t pieces =
      std::max((n + kVectorsPerTask - 1) / kVectorsPerTask, std::min<std::int64_t>(threads, (n + 7) / 8));
  const std::int64_t per = ((n + pieces - 1) / pieces + 7) / 8 * 8;
  for (std::int64_t p = 0; p < n; p += per) {
    const std::int64_t w = std::min(per, n - p);
    tasks.emplace_back([&R, x = x + p * m, w, m, y = y + p * d, half](int t) {
      R.forward(x, w, m, y, half, t);
    });
  }
}

// Runs the tasks: across the threads when there are enough of them, else one after the other
// with the threads inside each.
inline void run_tasks(const Tasks& tasks, int threads) {
  const auto n = static_cast<std::int64_t>(tasks.size());
  if (n >= threads)
    parallel_for(n, threads, [&](std::int64_t t) { tasks[static_cast<std::size_t>(t)](1); });
  else
    for (const auto& t : tasks) t(threads);
}

// The working budget's split: the object sketches in flight of a group of graphs get 3/4 of it,
// a level slice's scratch the rest, in kSliceBuffers slice-sized buffers (sketch_graphs, and
// its peak below).
inline std::size_t group_bytes(std::size_t working_bytes) noexcept { return working_bytes / 4 * 3; }
inline std::size_t slice_bytes(std::size_t working_bytes) noexcept { return working_bytes / 4; }
inline constexpr std::size_t kSliceBuffers = 5;

// Sketches graphs [k0, k1) of the batch level by level (see the top of this file).
template <class T>
void sketch_levels(const GraphBatch& g, const MatrixBank& bank, std::int64_t d, std::int64_t k0,
                   std::int64_t k1, int threads, std::size_t scratch_bytes, T* overall,
                   T* objects) {
  const std::int64_t r0 = g.graph_ptr[k0], r1 = g.graph_ptr[k1], n = r1 - r0;
  const auto ud = static_cast<std::size_t>(d);
  auto at = [r0](std::int64_t r) { return static_cast<std::size_t>(r - r0); };
  auto fan_in = [&](std::int64_t r) { return g.input_ptr[r + 1] - g.input_ptr[r]; };
  auto is_embedded = [&](std::int64_t r) { return g.embedded != nullptr && g.embedded[r] != 0; };

  // Levels, the level of each object's last parent, and each graph's output row.
  std::vector<std::int64_t> level(static_cast<std::size_t>(n), 0), last_level(level.size(), -1),
      output_of(level.size(), -1);
  for (std::int64_t k = k0; k < k1; ++k) output_of[at(g.graph_ptr[k + 1] - 1)] = k;
  std::int64_t n_levels = 0;
  for (std::int64_t r = r0; r < r1; ++r) {
    for (std::int64_t e = g.input_ptr[r]; e < g.input_ptr[r + 1]; ++e)
      level[at(r)] = std::max(level[at(r)], level[at(g.input_row[e])] + 1);
    n_levels = std::max(n_levels, level[at(r)] + 1);
  }
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t e = g.input_ptr[r]; e < g.input_ptr[r + 1]; ++e)
      last_level[at(g.input_row[e])] = std::max(last_level[at(g.input_row[e])], level[at(r)]);
  // Rows by level (row order within a level), and the rows to free after each level.
  std::vector<std::vector<std::int64_t>> rows_at(static_cast<std::size_t>(n_levels)),
      free_after(static_cast<std::size_t>(n_levels));
  for (std::int64_t r = r0; r < r1; ++r) {
    rows_at[static_cast<std::size_t>(level[at(r)])].push_back(r);
    if (last_level[at(r)] >= 0) free_after[static_cast<std::size_t>(last_level[at(r)])].push_back(r);
  }

  std::vector<std::vector<T>> obj(static_cast<std::size_t>(n));  // sketches in flight
  // Five slice-sized buffers (inputs, tuples, products, gathered vectors, their products). At a
  // large d a slice goes down to one row rather than overrun the budget (the kernels cut their
  // panels greedily, so the slice size never changes a bit).
  const auto slice = static_cast<std::int64_t>(
      std::max<std::size_t>(1, scratch_bytes / (kSliceBuffers * ud * sizeof(T))));
  std::vector<T> in, tuple, prod, gathered, gathered_prod;
  std::vector<std::int64_t> slot_of(static_cast<std::size_t>(n), -1);
  const T one(1), half(0.5);

  for (std::int64_t lv = 0; lv < n_levels; ++lv) {
    const auto& rows = rows_at[static_cast<std::size_t>(lv)];
    for (std::size_t s0 = 0; s0 < rows.size(); s0 += static_cast<std::size_t>(slice)) {
      // The slice's objects grouped by module (row order within a module), then the embedded
      // leaves, outputs last.
      std::vector<std::int64_t> ord(rows.begin() + static_cast<std::ptrdiff_t>(s0),
                                    rows.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                       rows.size(), s0 + static_cast<std::size_t>(slice))));
      auto kind = [&](std::int64_t r) { return g.module[r] < 0 ? 2 : is_embedded(r) ? 1 : 0; };
      std::stable_sort(ord.begin(), ord.end(), [&](std::int64_t a, std::int64_t b) {
        return std::make_pair(kind(a), g.module[a]) < std::make_pair(kind(b), g.module[b]);
      });
      const auto n_s = static_cast<std::int64_t>(ord.size());
      std::int64_t n_obj = 0, n_sparse = 0, max_fan = 0;
      for (std::int64_t r : ord) {
        n_obj += kind(r) < 2;
        n_sparse += kind(r) == 0;
        max_fan = std::max(max_fan, fan_in(r));
      }
      const auto rows_d = static_cast<std::size_t>(n_s) * ud;
      in.assign(rows_d, T(0));

      // s_input = sum_i w_i P(R[i]) s_object(child_i), position by position: position i's
      // edges of the whole slice are one product (a child feeding several rows at the same
      // position is transformed once), and each row adds its terms in position order.
      for (std::int64_t i = 1; i <= max_fan; ++i) {
        std::vector<std::int64_t> children;
        for (std::int64_t r : ord)
          if (fan_in(r) >= i) {
            const std::int64_t c = g.input_row[g.input_ptr[r] + i - 1];
            if (slot_of[at(c)] < 0) {
              slot_of[at(c)] = static_cast<std::int64_t>(children.size());
              children.push_back(c);
            }
          }
        const auto u = static_cast<std::int64_t>(children.size());
        gathered.resize(static_cast<std::size_t>(u) * ud);
        gathered_prod.resize(gathered.size());
        for (std::int64_t c = 0; c < u; ++c)
          std::copy(obj[at(children[static_cast<std::size_t>(c)])].begin(),
                    obj[at(children[static_cast<std::size_t>(c)])].end(),
                    gathered.begin() + static_cast<std::ptrdiff_t>(c * d));
        Tasks tasks;
        queue_product(tasks, bank.positions[static_cast<std::size_t>(i - 1)], gathered.data(), u,
                      d, gathered_prod.data(), true, d, threads);
        run_tasks(tasks, threads);
        for (std::int64_t p = 0; p < n_s; ++p) {
          const std::int64_t r = ord[static_cast<std::size_t>(p)];
          if (fan_in(r) < i) continue;
          const std::int64_t e = g.input_ptr[r] + i - 1;
          const T w = static_cast<T>(g.input_weight[e]);
          const T* h = gathered_prod.data() + slot_of[at(g.input_row[e])] * d;
          T* out = in.data() + p * d;
          for (std::int64_t c = 0; c < d; ++c) out[c] += w * h[c];
        }
        for (std::int64_t c : children) slot_of[at(c)] = -1;
      }

      // Output rows: s_overall = s_input.
      for (std::int64_t p = n_obj; p < n_s; ++p) {
        const std::int64_t r = ord[static_cast<std::size_t>(p)];
        const T* v = in.data() + p * d;
        const std::int64_t k = output_of[at(r)];
        std::copy(v, v + d, overall + k * d);
        if (objects) std::copy(v, v + d, objects + r * d);
      }
      if (n_obj == 0) continue;
      prod.resize(static_cast<std::size_t>(n_obj) * ud);

      // Embedded leaves: s_object = A_M [x; 1].
      {
        Tasks tasks;
        for (std::int64_t p = n_sparse; p < n_obj; ++p)
          tasks.emplace_back([&, p](int) {
            const std::int64_t r = ord[static_cast<std::size_t>(p)];
            const auto m = static_cast<std::size_t>(g.module[r]);
            std::vector<double> sum(ud, 0.0);
            add_embedded(bank.leaf_embed[m], g.attr + g.attr_ptr[r], bank.leaf_embed_k[m],
                         sum.data(), d);
            std::transform(sum.begin(), sum.end(), prod.begin() + static_cast<std::ptrdiff_t>(p * d),
                           [](double v) { return static_cast<T>(v); });
          });
        run_tasks(tasks, threads);
      }

      // Runs of one module in ord[0, n_sparse).
      std::vector<std::pair<std::int64_t, std::int64_t>> groups;
      for (std::int64_t p = 0; p < n_sparse;) {
        std::int64_t q = p + 1;
        while (q < n_sparse && g.module[ord[static_cast<std::size_t>(q)]] ==
                                g.module[ord[static_cast<std::size_t>(p)]])
          ++q;
        groups.emplace_back(p, q);
        p = q;
      }

      // s_attr = R[M,1] x / 2 + R[M,2] e_1 / 2, module by module.
      tuple.resize(static_cast<std::size_t>(n_sparse) * ud);
      {
        Tasks tasks;
        for (const auto& [p0, p1] : groups)
          for (std::int64_t q0 = p0; q0 < p1; q0 += kVectorsPerTask) {
            const std::int64_t q1 = std::min(p1, q0 + kVectorsPerTask);
            tasks.emplace_back([&, q0, q1](int t) {
              const auto& mats = bank.modules[static_cast<std::size_t>(g.module[ord[static_cast<std::size_t>(q0)]])];
              const std::int64_t len = g.attr_ptr[ord[static_cast<std::size_t>(q0)] + 1] -
                                       g.attr_ptr[ord[static_cast<std::size_t>(q0)]];
              std::vector<T> x(static_cast<std::size_t>((q1 - q0) * len));
              for (std::int64_t p = q0; p < q1; ++p) {
                const double* a = g.attr + g.attr_ptr[ord[static_cast<std::size_t>(p)]];
                std::transform(a, a + len, x.begin() + static_cast<std::ptrdiff_t>((p - q0) * len),
                               [](double v) { return static_cast<T>(v); });
              }
              T* attr = tuple.data() + q0 * d;
              mats[1].forward(x.data(), q1 - q0, len, attr, false, t);
              std::vector<T> col0(ud);
              mats[2].forward(&one, 1, 1, col0.data(), false, t);
              for (std::int64_t p = 0; p < q1 - q0; ++p)
                for (std::int64_t c = 0; c < d; ++c)
                  attr[p * d + c] = half * attr[p * d + c] + half * col0[static_cast<std::size_t>(c)];
            });
          }
        run_tasks(tasks, threads);
      }

      // tuple = P(R[1]) s_attr / 2 + P(R[2]) s_input / 2, each a product over the slice.
      {
        Tasks tasks;
        queue_product(tasks, bank.positions[0], tuple.data(), n_sparse, d, prod.data(), true, d,
                      threads);
        run_tasks(tasks, threads);
        for (std::size_t c = 0; c < tuple.size(); ++c) {
          tuple[c] = T(0);
          tuple[c] += half * prod[c];
        }
      }
      std::vector<std::int64_t> with_inputs;
      for (std::int64_t p = 0; p < n_sparse; ++p)
        if (fan_in(ord[static_cast<std::size_t>(p)]) > 0) with_inputs.push_back(p);
      if (!with_inputs.empty()) {
        const auto u = static_cast<std::int64_t>(with_inputs.size());
        gathered.resize(static_cast<std::size_t>(u) * ud);
        gathered_prod.resize(gathered.size());
        for (std::int64_t j = 0; j < u; ++j)
          std::copy(in.begin() + static_cast<std::ptrdiff_t>(with_inputs[static_cast<std::size_t>(j)] * d),
                    in.begin() + static_cast<std::ptrdiff_t>((with_inputs[static_cast<std::size_t>(j)] + 1) * d),
                    gathered.begin() + static_cast<std::ptrdiff_t>(j * d));
        Tasks tasks;
        queue_product(tasks, bank.positions[1], gathered.data(), u, d, gathered_prod.data(), true, d,
                      threads);
        run_tasks(tasks, threads);
        for (std::int64_t j = 0; j < u; ++j) {
          T* t = tuple.data() + with_inputs[static_cast<std::size_t>(j)] * d;
          const T* h = gathered_prod.data() + j * d;
          for (std::int64_t c = 0; c < d; ++c) t[c] += half * h[c];
        }
      }

      // s_object = P(R[M,0]) tuple, module by module.
      {
        // Enough modules to keep the threads busy: a module's objects stay in one task (a
        // fresh matrix is walked once).
        const int split = static_cast<std::int64_t>(groups.size()) >= threads ? 1 : threads;
        Tasks tasks;
        for (const auto& [p0, p1] : groups) {
          const auto& R0 = bank.modules[static_cast<std::size_t>(g.module[ord[static_cast<std::size_t>(p0)]])][0];
          queue_product(tasks, R0, tuple.data() + p0 * d, p1 - p0, d, prod.data() + p0 * d, true, d,
                        split);
        }
        run_tasks(tasks, threads);
      }
      for (std::int64_t p = 0; p < n_obj; ++p) {
        const std::int64_t r = ord[static_cast<std::size_t>(p)];
        const T* v = prod.data() + p * d;
        if (objects) std::copy(v, v + d, objects + r * d);
        if (last_level[at(r)] >= 0) obj[at(r)].assign(v, v + d);
      }
    }
    for (std::int64_t r : free_after[static_cast<std::size_t>(lv)]) std::vector<T>().swap(obj[at(r)]);
  }
}

}  // namespace detail

// Sketches every graph of the batch: overall (n_graphs x d) receives s_overall, and objects
// (rows x d, or null) every row's object sketch (output rows: s_overall again). Graphs are
// taken in consecutive groups whose object sketches fit 3/4 of `working_bytes` (at least one
// graph per group); the rest bounds a level slice's scratch.
template <class T>
void sketch_graphs(const GraphBatch& g, const MatrixBank& bank, std::int64_t d, T* overall,
                   T* objects, int num_threads,
                   std::size_t working_bytes = kSketchWorkingBytes) {
  detail::check_batch(g, bank, d);
  const int threads = check_threads(num_threads);
  const std::size_t row_bytes = static_cast<std::size_t>(d) * sizeof(T);
  const std::size_t group_rows =
      std::max<std::size_t>(1, detail::group_bytes(working_bytes) / row_bytes);
  for (std::int64_t k0 = 0; k0 < g.n_graphs;) {
    std::int64_t k1 = k0 + 1;
    while (k1 < g.n_graphs &&
           static_cast<std::size_t>(g.graph_ptr[k1 + 1] - g.graph_ptr[k0]) <= group_rows)
      ++k1;
    detail::sketch_levels<T>(g, bank, d, k0, k1, threads, detail::slice_bytes(working_bytes),
                             overall, objects);
    k0 = k1;
  }
}

// Bookkeeping of sketch_levels besides the sketches, per row of a group: its level, its last
// parent's level, its output and gather slots; its sketch's vector header and allocation
// overhead; its entries in the lists of rows by level and of rows to free (at most twice their
// size in capacity) and, for a chain of one row per level, those two lists' own headers and
// allocations. Per row of a slice: its place in the slice's order, among the gathered
// children, and in the runs of one module.
inline constexpr std::uint64_t kAllocationOverhead = 32;
inline constexpr std::uint64_t kRowBookkeepingBytes =
    4 * sizeof(std::int64_t) + (sizeof(std::vector<char>) + kAllocationOverhead) +
    2 * 2 * sizeof(std::int64_t) + 2 * (sizeof(std::vector<char>) + kAllocationOverhead);
inline constexpr std::uint64_t kSliceRowBookkeepingBytes = 4 * sizeof(std::int64_t);

// Rows of the batch's largest graph (g as check_batch accepts it).
inline std::int64_t widest_graph(const GraphBatch& g) noexcept {
  std::int64_t widest = 0;
  for (std::int64_t k = 0; k < g.n_graphs; ++k)
    widest = std::max(widest, g.graph_ptr[k + 1] - g.graph_ptr[k]);
  return widest;
}

// Bytes sketch_graphs with elements of `item_bytes` may hold at once besides its inputs, for
// a batch check_batch accepts (the bindings check it against the allocation limit before any
// output exists). Each part is a product of the batch's size and d:
// - the outputs: n_graphs sketches, and with return_objects one per row;
// - the object sketches in flight: a group's 3/4 of the working budget, but a graph larger
//   than that is sketched alone and keeps its frontier, bounded by its rows; never more rows
//   than the batch has;
// - a level slice: kSliceBuffers buffers in the other quarter, but at least one row each and
//   never more rows than the batch,
//   plus its attribute inputs (at most one row of d per slice row: a fifth of those), one
//   column of R[M,2] per running task and, with embedded leaves, one float64 d-vector each;
// - the bookkeeping per row in flight and per slice row (kRowBookkeepingBytes);
// - the products' scratch: up to min(threads, rows) products of up to kVectorsPerTask vectors
//   at one thread each, or one at all threads, of the bank's largest.
// Saturates at 2^64 - 1 (bytes.hpp).
inline std::uint64_t sketch_graphs_peak_bytes(const GraphBatch& g, const MatrixBank& bank,
                                              std::int64_t d, std::size_t item_bytes,
                                              bool return_objects, int num_threads,
                                              std::size_t working_bytes = kSketchWorkingBytes) {
  const std::uint64_t item = item_bytes, ud = static_cast<std::uint64_t>(d);
  const std::uint64_t row = ud * item;
  const int threads = resolve_threads(num_threads);
  const std::int64_t task_vectors = std::min<std::int64_t>(detail::kVectorsPerTask,
                                                           std::max<std::int64_t>(1, g.rows));
  const auto running = static_cast<std::uint64_t>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(threads, g.rows)));
  std::uint64_t product = 0;
  auto count = [&](const MatrixRef& r) {
    product = std::max(product, mul_bytes(running, r.scratch_bytes(task_vectors, 1)));
    product = std::max(product, r.scratch_bytes(task_vectors, threads));
  };
  for (const auto& mats : bank.modules)
    for (const auto& r : mats) count(r);
  for (const auto& r : bank.positions) count(r);
  // Rows, not the budget: a small batch holds no more object sketches than its rows, and no
  // level slice more rows than the batch (the groups and slices of sketch_graphs).
  const auto rows = static_cast<std::uint64_t>(std::max<std::int64_t>(1, g.rows));
  const std::uint64_t group_rows = std::max<std::uint64_t>(1, detail::group_bytes(working_bytes) / row);
  const std::uint64_t slice_rows =
      std::max<std::uint64_t>(1, detail::slice_bytes(working_bytes) / (detail::kSliceBuffers * row));
  const std::uint64_t slice_buffers =
      mul_bytes(mul_bytes(detail::kSliceBuffers, std::min(slice_rows, rows)), row);
  const std::uint64_t flight_rows =
      std::min(rows, std::max(group_rows, static_cast<std::uint64_t>(widest_graph(g))));
  const std::uint64_t bookkeeping =
      add_bytes(mul_bytes(flight_rows, kRowBookkeepingBytes),
                mul_bytes(std::min(slice_rows, rows), kSliceRowBookkeepingBytes));
  // an embedded leaf sums its embedding's rows in float64, one d-vector per running task
  const bool embeds = std::any_of(bank.leaf_embed.begin(), bank.leaf_embed.end(),
                                  [](const double* a) { return a != nullptr; });
  const std::uint64_t embed_sums = embeds ? mul_bytes(running, mul_bytes(ud, sizeof(double))) : 0;
  const std::uint64_t in_flight = add_bytes(
      add_bytes(mul_bytes(flight_rows, row), bookkeeping),
      add_bytes(add_bytes(add_bytes(slice_buffers, slice_buffers / 5), mul_bytes(running, row)),
                embed_sums));
  const std::uint64_t outputs = mul_bytes(
      static_cast<std::uint64_t>(g.n_graphs) + (return_objects ? static_cast<std::uint64_t>(g.rows) : 0),
      row);
  return add_bytes(add_bytes(outputs, in_flight), product);
}

}  // namespace recsketch
