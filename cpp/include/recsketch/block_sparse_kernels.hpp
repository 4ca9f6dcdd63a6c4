// Products with block-sparse matrices: R x, R^T y, (x + R x)/2, (y + R^T y)/2, on one vector or
// a batch, without ever holding R.
//
// Design notes
// - Structure (DESIGN.md section 2): a nonzero block of column j is [f_s s_j ; f_c Enc_j ; f_m s_m]
//   times 1/sqrt(dq). The matrix-signature sub-block of block-row i is s_m times one scalar
//   sum_j f_m x_j, and Enc's sub-block only has a constant part, L = ceil(log2 d) bit positions
//   and two parity positions, so R x keeps per block-row: b/3 random-string sums, one signature
//   sum, one constant sum, two parity sums and L bit sums ("structured accumulators"), expanded
//   to the d outputs once at the end. R^T y reads y through the same structure.
// - R x walks each column once (or reads its walk from walk_cache.hpp) and adds, per nonzero
//   block, one row of SIMD registers to that block-row's accumulator: the column's scaled
//   "base" times the block's flip signs (see FlipSigns). Batches are processed in panels of 8,
//   4 or 1 vectors stored transposed, so each column's walk serves the whole panel and a
//   slot's update is one register across the panel's vectors.
// - Reproducibility: R x sums column contributions in kColumnChunks fixed chunks of columns,
//   each into its own accumulator, and adds the chunk sums in chunk order. Threads take whole
//   panels or whole chunks, never split a sum, so every output bit is independent of the thread
//   count and of whether a vector came alone or in a batch. R^T y computes every output from
//   one column, in block order.
// - Precision: a chunk sums in the input's type (d/8 columns; a float32 CSR product sums
//   all d in float32), chunk sums are added in double, R^T y sums in double, and only the
//   final value is rounded to T. Adds and products by +-1 only (no FMA), so the scalar and
//   AVX2 builds give the same bits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "recsketch/block_sparse.hpp"
#include "recsketch/enc.hpp"
#include "recsketch/multiversion.hpp"
#include "recsketch/parallel.hpp"
#include "recsketch/simd.hpp"
#include "recsketch/walk_cache.hpp"

namespace recsketch {

inline constexpr std::int64_t kColumnChunks = 8;


namespace detail {

// Panel widths, widest first: a batch is cut greedily into panels of these many vectors, so no
// work is padded.
inline constexpr int kPanelWidths[] = {8, 4, 1};

struct Panel {
  std::int64_t first;  // index of the panel's first vector
  int width;
};

inline std::vector<Panel> cut_panels(std::int64_t n) {
  std::vector<Panel> panels;
  std::int64_t p0 = 0;
  for (int w : kPanelWidths)
    for (; n - p0 >= w; p0 += w) panels.push_back(Panel{p0, w});
  return panels;
}

// Runs f(std::integral_constant<int, W>) for the runtime width w.
template <class F>
void with_width(int w, F&& f) {
  switch (w) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
  }
}

// Algorithm 2, line 9: Enc's parity bit f' = f * sign(sigma[0]) is negative exactly when one of
// the flip f and the signature's first entry is negative.
inline bool parity_negative(bool flip_negative, bool signature0_negative) noexcept {
  return flip_negative != signature0_negative;
}

// Column j's part of a cache entry, for columns read in increasing order.
struct PartCursor {
  std::size_t part = 0;
  std::int64_t end = 0;  // first column of the next part
  PartCursor(const ColumnWalks* walks, std::int64_t j0) {
    if (!walks) return;
    part = static_cast<std::size_t>(j0 / walks->part_columns);
    end = (static_cast<std::int64_t>(part) + 1) * walks->part_columns;
  }
  std::size_t at(const ColumnWalks& walks, std::int64_t j) noexcept {
    for (; j >= end; end += walks.part_columns) ++part;
    return part;
  }
};

// Column j's walk as encoded entries (ColumnWalks::encode): from the cache when there is one
// (16- or 32-bit entries, as stored), else walked now into `buffer` (n_blocks entries).
inline ColumnWalks::View column_walk(const BlockSparseMatrix& R, const ColumnWalks* walks,
                                     std::int64_t j, std::uint32_t* buffer, PartCursor& cursor) {
  if (walks) return walks->column(j, cursor.at(*walks, j));
  std::int64_t n = 0;
  R.walk_column(j, [&](const BlockFlips& fl) { buffer[n++] = ColumnWalks::encode(fl); });
  return ColumnWalks::View{nullptr, buffer, n};
}

// Signs of one column shared by all its blocks: sigma_{s,j}'s sign bits and the two signs the
// parity bits depend on.
struct ColumnCode {
  std::vector<std::uint64_t> words;  // bit r set: sigma_{s,j}[r] < 0
  bool s0_negative = false;          // sign(sigma_{s,j}[0]) < 0
  bool m0_negative = false;          // sign(sigma_m[0]) < 0

  explicit ColumnCode(std::int64_t third) : words(static_cast<std::size_t>((third + 63) / 64)) {}

  void load(const BlockSparseMatrix& R, std::int64_t j) {
    R.random_string_bits(j, words.data());
    s0_negative = bit_at(words.data(), 0);
    m0_negative = bit_at(R.signature_bits(), 0);
  }

  // sigma_{s,j}[r] as +-1, branch-free (the bits are random: a branch would mispredict half
  // the time).
  template <class A>
  A sign(std::int64_t r) const noexcept {
    const auto bit = (words[static_cast<std::size_t>(r >> 6)] >> (r & 63)) & 1U;
    return A(1) - A(2) * static_cast<A>(bit);
  }
};

// sigma_m as +-1 doubles.
inline std::vector<double> signature_signs(const BlockSparseMatrix& R) {
  std::vector<double> s(static_cast<std::size_t>(R.family().third()));
  for (std::size_t r = 0; r < s.size(); ++r) s[r] = bit_at(R.signature_bits(), r) ? -1.0 : 1.0;
  return s;
}

// The structured accumulator of one block-row: slots, each holding W values (one per vector),
// padded to a multiple of `align` so that a block's update is whole SIMD registers.
template <int W>
struct ForwardLayout {
  std::int64_t third, L, align;
  std::int64_t slots() const noexcept { return (third + 4 + L + align - 1) / align * align; }
  std::int64_t size(std::int64_t n_blocks) const noexcept { return n_blocks * slots() * W; }
  std::int64_t s(std::int64_t r) const noexcept { return r * W; }    // random string
  std::int64_t m() const noexcept { return third * W; }              // signature sum
  std::int64_t a() const noexcept { return (third + 1) * W; }        // Enc constant sum
  std::int64_t pm() const noexcept { return (third + 2) * W; }       // Enc parity b_m
  std::int64_t ps() const noexcept { return (third + 3) * W; }       // Enc parity b_s
  std::int64_t bit(std::int64_t t) const noexcept { return (third + 4 + t) * W; }
};

// One vector's slots are padded to whole registers (its update runs along the slots); a panel's
// are not (its update runs along the W vectors of each slot).
template <class A, int W>
ForwardLayout<W> forward_layout(const BlockSparseFamily& f) {
  return ForwardLayout<W>{f.third(), f.index_bits(), W == 1 ? kLanes<A> : 1};
}

// A nonzero block of column j adds to every slot of its block-row x_j times a sign, and the sign
// is (a per-column base) times (a sign chosen by the block's flips alone):
//   slot        base (per column)            flip sign (per block)
//   s[r]        sigma_{s,j}[r]               f_s
//   m           1                            f_m
//   a           1                            f_c
//   pm          sign(sigma_m[0])             f_c f_m       (f_c f'_m, Algorithm 2 line 9)
//   ps          sign(sigma_{s,j}[0])         f_c f_s       (f_c f'_s)
//   bit t       1 if bit t of j is set, 0    f_c
// So a block's update is one elementwise product-and-add over the padded slots: the column's
// scaled base times one of 8 sign rows. Multiplying by +-1 and adding +-0 are exact, so these
// are the same sums, in the same order, as adding +-x_j slot by slot.
template <class A>
struct FlipSigns {
  std::int64_t slots;
  std::vector<A> rows;  // 8 x slots, row 4 neg_s + 2 neg_c + neg_m

  explicit FlipSigns(const ForwardLayout<1>& lay)
      : slots(lay.slots()), rows(static_cast<std::size_t>(8 * lay.slots()), A(1)) {
    for (int k = 0; k < 8; ++k) {
      const bool ns = (k & 4) != 0, nc = (k & 2) != 0, nm = (k & 1) != 0;
      A* row = rows.data() + k * slots;
      auto sgn = [](bool negative) { return negative ? A(-1) : A(1); };
      for (std::int64_t r = 0; r < lay.third; ++r) row[lay.s(r)] = sgn(ns);
      row[lay.m()] = sgn(nm);
      row[lay.a()] = sgn(nc);
      row[lay.pm()] = sgn(nc != nm);
      row[lay.ps()] = sgn(nc != ns);
      for (std::int64_t t = 0; t < lay.L; ++t) row[lay.bit(t)] = sgn(nc);
    }
  }
  // Row of the flips of an encoded walk entry (its low 3 bits, ColumnWalks::encode).
  const A* row(std::uint32_t entry) const noexcept {
    return rows.data() + static_cast<std::int64_t>(entry & 7U) * slots;
  }
};

// One vector: a[s] += v[s] * sign[s] over the padded slots of one block-row, in whole registers
// (left to itself the vectoriser runs across s and transposes).
template <class A>
RECSKETCH_ALWAYS_INLINE void block_update(A* a, const A* v, const A* sign,
                                                std::int64_t slots) noexcept {
  constexpr int N = kLanes<A>;
  using V = typename Vec<A, N>::type;
  for (std::int64_t s = 0; s < slots; s += N) {
    V acc, val, sg;
    std::memcpy(&acc, a + s, sizeof acc);
    std::memcpy(&val, v + s, sizeof val);
    std::memcpy(&sg, sign + s, sizeof sg);
    acc += val * sg;
    std::memcpy(a + s, &acc, sizeof acc);
  }
}

// Index of the lowest set bit of a nonzero word.
inline int lowest_bit(std::uint64_t w) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(w);
#else
  int k = 0;
  while (((w >> k) & 1U) == 0) ++k;
  return k;
#endif
}

// a[s][0..W) += (negative ? neg : pos)[s][0..W), one register. A named always-inline function
// rather than a lambda, for the reason given at column_updates.
template <int W, class A>
RECSKETCH_ALWAYS_INLINE void panel_add(A* a, const A* pos, const A* neg, std::int64_t s,
                                       bool negative) noexcept {
  using V = typename Vec<A, W>::type;
  const A* src = (negative ? neg : pos) + s * W;
  V acc, val;
  std::memcpy(&acc, a + s * W, sizeof acc);
  std::memcpy(&val, src, sizeof val);
  acc += val;
  std::memcpy(a + s * W, &acc, sizeof acc);
}

// A panel of W vectors: a[s][0..W) += (+-v)[s][0..W), the sign of each group of slots picked
// by the block's flips (the table above), so there is no product: pos and neg hold the
// column's scaled base and its negation. The groups are spelled out rather than read from the
// FlipSigns row slot by slot: that read cost a fifth of the batch time.
// The index-bit slots are updated only where their bit of j is set: elsewhere the column adds +-0, and adding
// +-0 to a sum that started at +0 never changes it (such a sum is never -0: IEEE round to
// nearest gives +0 for +0 + -0 and for an exact cancellation; inputs are finite, checked at
// every entry point, so 0 * x is never NaN). This assumes the default floating-point
// environment: round to nearest, and no flush-to-zero / denormals-are-zero (with FTZ a tiny
// difference could round to a zero of either sign). Should a chunk's part still be -0, the
// chunk sums are added into a total that starts at +0.0, which turns it into +0 either way.
// Same bits, a fifth fewer updates.
template <int W, class A>
RECSKETCH_ALWAYS_INLINE void block_update_panel(A* a, const A* pos, const A* neg,
                                                      std::uint32_t entry, std::int64_t third,
                                                      std::int64_t L, std::uint64_t j) noexcept {
  const bool ns = (entry & 4U) != 0, nc = (entry & 2U) != 0, nm = (entry & 1U) != 0;
  for (std::int64_t r = 0; r < third; ++r) panel_add<W>(a, pos, neg, r, ns);
  panel_add<W>(a, pos, neg, third, nm);
  panel_add<W>(a, pos, neg, third + 1, nc);
  panel_add<W>(a, pos, neg, third + 2, nc != nm);
  panel_add<W>(a, pos, neg, third + 3, nc != ns);
  for (std::uint64_t bits = j; bits != 0; bits &= bits - 1)  // slot bit(t) holds bit L-1-t of j
    panel_add<W>(a, pos, neg, third + 4 + (L - 1 - lowest_bit(bits)), nc);
}

// Adds one column's contributions to the block-rows of its walk (entries as stored, 16 or 32
// bits): v is the column's scaled base, neg its negation (panels only). A named always-inline
// function rather than a generic lambda: GCC may compile a lambda's instantiation out of line,
// and out of line it is built for the baseline ISA, outside the caller's AVX2 clone
// (multiversion.hpp), with its registers spilled through the closure.
template <int W, class A, class E>
RECSKETCH_ALWAYS_INLINE void column_updates(const E* entries, std::int64_t n, A* acc,
                                            std::int64_t row_size, const A* v, const A* neg,
                                            const FlipSigns<A>& signs, std::int64_t third,
                                            std::int64_t L, std::uint64_t j) noexcept {
  constexpr std::int64_t kLine = 64 / static_cast<std::int64_t>(sizeof(A));
  for (std::int64_t k = 0; k < n; ++k) {
    if (W == 1 && k + 2 < n) {
      const A* ahead = acc + static_cast<std::int64_t>(entries[k + 2] >> 3) * row_size;
      for (std::int64_t c = 0; c < row_size; c += kLine) RECSKETCH_PREFETCH_WRITE(ahead + c);
    }
    const std::uint32_t e = entries[k];
    A* a = acc + static_cast<std::int64_t>(e >> 3) * row_size;
    if constexpr (W == 1)
      block_update(a, v, signs.row(e), signs.slots);
    else
      block_update_panel<W>(a, v, neg, e, third, L, j);
  }
}

// rows[k][i]: +-1 for bit i of k, negative when it is set (eight signs of sigma_{s,j} per read);
// msb_first[k][i]: bit 7 - i of k as 0 or 1 (the index bits of Enc, most significant first).
template <class A>
struct ByteSigns {
  A rows[256][8];
  A msb_first[256][8];
  ByteSigns() noexcept {
    for (int k = 0; k < 256; ++k)
      for (int i = 0; i < 8; ++i) {
        rows[k][i] = ((k >> i) & 1) ? A(-1) : A(1);
        msb_first[k][i] = static_cast<A>((k >> (7 - i)) & 1);
      }
  }
  static const ByteSigns& get() noexcept {
    static const ByteSigns table;
    return table;
  }
};

// Column j's base (the table above) into b[0 .. lay.slots()) of one vector's layout; the
// padding is left as it is (zero). It runs once per column: inlined into the kernels' clones,
// eight random-string signs per table read (bit by bit, out of line, it cost as much as a
// fifth of a one-vector product).
template <class A>
RECSKETCH_ALWAYS_INLINE void column_base(const ColumnCode& code, const ByteSigns<A>& table,
                                         const ForwardLayout<1>& lay, std::int64_t j, A* b) {
  for (std::int64_t r0 = 0; r0 < lay.third; r0 += 8) {
    const std::uint64_t word = code.words[static_cast<std::size_t>(r0 >> 6)];
    const A* signs = table.rows[(word >> (r0 & 63)) & 0xFFU];
    A* out = b + lay.s(r0);
    if (r0 + 8 <= lay.third)
      std::memcpy(out, signs, 8 * sizeof(A));
    else
      for (std::int64_t r = 0; r < lay.third - r0; ++r) out[r] = signs[r];
  }
  b[lay.m()] = A(1);
  b[lay.a()] = A(1);
  b[lay.pm()] = code.m0_negative ? A(-1) : A(1);
  b[lay.ps()] = code.s0_negative ? A(-1) : A(1);
  // Slot bit(t) holds bit L-1-t of j: eight slots per read of the bit-reversed 0/1 table.
  for (std::int64_t t0 = 0; t0 < lay.L; t0 += 8) {
    const std::int64_t shift = lay.L - t0 - 8;
    const auto byte = static_cast<std::uint64_t>(shift >= 0 ? j >> shift : j << -shift) & 0xFFU;
    const A* bits = table.msb_first[byte];
    A* out = b + lay.bit(t0);
    const std::int64_t n = std::min<std::int64_t>(8, lay.L - t0);
    if (n == 8)
      std::memcpy(out, bits, 8 * sizeof(A));
    else
      for (std::int64_t t = 0; t < n; ++t) out[t] = bits[t];
  }
}

// acc += contributions of columns [j0, j1) of R; xp holds column j's W inputs at xp + j*W.
// If `record` is not null (and walks is), every column's walk, zero inputs included, is appended
// to its part `part` as it is generated (walk_cache.hpp: a first product fills the cache in the
// same pass, without a separate build).
template <int W, class A>
RECSKETCH_ALWAYS_INLINE void forward_chunk_body(const BlockSparseMatrix& R,
                                                const ColumnWalks* walks, const A* xp,
                                                std::int64_t j0, std::int64_t j1, A* acc,
                                                ColumnWalks* record, std::size_t part) {
  const BlockSparseFamily& f = R.family();
  const ForwardLayout<W> lay = forward_layout<A, W>(f);
  const ForwardLayout<1> lay1{lay.third, lay.L, lay.align};  // one vector's view of the slots
  const FlipSigns<A> signs(lay1);
  const ByteSigns<A>& byte_signs = ByteSigns<A>::get();
  const std::int64_t slots = lay.slots(), third = f.third(), L = f.index_bits();
  const std::int64_t row_size = slots * W;
  std::vector<A> base(static_cast<std::size_t>(slots), A(0));
  std::vector<A> scaled(static_cast<std::size_t>(row_size), A(0));
  std::vector<A> negated(static_cast<std::size_t>(row_size), A(0));
  ColumnCode code(third);
  std::vector<std::uint32_t> buffer(static_cast<std::size_t>(f.n_blocks()));
  if (record) record->reserve(part, ColumnWalks::reserve_for(f, j1 - j0));
  PartCursor cursor(walks, j0);
  for (std::int64_t j = j0; j < j1; ++j) {
    const A* x = xp + j * W;
    bool any = false;
    for (int v = 0; v < W; ++v) any |= (x[v] != A(0));
    if (!any && !record) continue;
    // The whole walk first, then the updates: they no longer wait on the walk's hashes, and for
    // one vector the accumulator row of the block two steps ahead can be prefetched (a panel's
    // rows are 18 lines or more: prefetching them only stalled on full fill buffers).
    const ColumnWalks::View walk = column_walk(R, walks, j, buffer.data(), cursor);
    if (record) {  // walks is null: the entries are the 32-bit buffer
      record->append(part, walk.e32, walk.n);
      record->ends[static_cast<std::size_t>(j)] = record->part_size(part);
      if (!any) continue;
    }
    code.load(R, j);
    A* b = base.data();
    column_base(code, byte_signs, lay1, j, b);
    A* __restrict v = scaled.data();
    for (std::int64_t s = 0; s < slots; ++s)
      for (int w = 0; w < W; ++w) v[s * W + w] = b[s] * x[w];
    if constexpr (W > 1)
      for (std::int64_t s = 0; s < row_size; ++s) negated[static_cast<std::size_t>(s)] = -v[s];
    if (walk.e16)
      column_updates<W>(walk.e16, walk.n, acc, row_size, v, negated.data(), signs, third, L,
                        static_cast<std::uint64_t>(j));
    else
      column_updates<W>(walk.e32, walk.n, acc, row_size, v, negated.data(), signs, third, L,
                        static_cast<std::uint64_t>(j));
  }
}

// forward_chunk_body compiled for the ISAs of multiversion.hpp and chosen at load time ...
template <int W, class A>
RECSKETCH_MULTIVERSION void forward_chunk_clones(const BlockSparseMatrix& R,
                                                 const ColumnWalks* walks, const A* xp,
                                                 std::int64_t j0, std::int64_t j1, A* acc,
                                                 ColumnWalks* record, std::size_t part) {
  forward_chunk_body<W>(R, walks, xp, j0, j1, acc, record, part);
}

// ... and for the baseline ISA only (tests: baseline_isa_forced).
template <int W, class A>
void forward_chunk_baseline(const BlockSparseMatrix& R, const ColumnWalks* walks, const A* xp,
                            std::int64_t j0, std::int64_t j1, A* acc, ColumnWalks* record,
                            std::size_t part) {
  forward_chunk_body<W>(R, walks, xp, j0, j1, acc, record, part);
}

template <int W, class A>
void forward_chunk(const BlockSparseMatrix& R, const ColumnWalks* walks, const A* xp,
                   std::int64_t j0, std::int64_t j1, A* acc, ColumnWalks* record,
                   std::size_t part) {
  if (baseline_isa_forced().load(std::memory_order_relaxed))
    forward_chunk_baseline<W>(R, walks, xp, j0, j1, acc, record, part);
  else
    forward_chunk_clones<W>(R, walks, xp, j0, j1, acc, record, part);
}

// Writes output vector v of a panel from its structured accumulator. If x_half is not null the
// result is (x + R x)/2 with x_half the vector's input.
template <int W, class T>
void forward_expand(const BlockSparseMatrix& R, const std::vector<double>& sig, const double* acc,
                    int v, const T* x_half, T* y) {
  const BlockSparseFamily& f = R.family();
  const ForwardLayout<W> lay = forward_layout<T, W>(f);
  const std::int64_t b = f.block_size(), third = f.third();
  const int L = f.index_bits();
  const double scale = f.scale();
  auto put = [&](std::int64_t row, double value) {
    const double rx = scale * value;
    y[row] = static_cast<T>(x_half ? 0.5 * (static_cast<double>(x_half[row]) + rx) : rx);
  };
  for (std::int64_t i = 0; i < f.n_blocks(); ++i) {
    const double* a = acc + i * lay.slots() * W + v;
    const std::int64_t base = i * b;
    for (std::int64_t r = 0; r < third; ++r) put(base + r, a[lay.s(r)]);
    const double constant = a[lay.a()];
    const std::int64_t c = base + third;
    put(c, constant);
    for (int t = 0; t < L; ++t) put(c + 1 + t, 2.0 * a[lay.bit(t)] - constant);
    put(c + L + 1, a[lay.pm()]);
    put(c + L + 2, a[lay.ps()]);
    for (std::int64_t p = L + 3; p < third; ++p) put(c + p, constant);
    const double msum = a[lay.m()];
    for (std::int64_t r = 0; r < third; ++r)
      put(base + 2 * third + r, sig[static_cast<std::size_t>(r)] * msum);
  }
}

// Copies rows [p0, p0 + W) of a row-major (n x m) array into a transposed panel (m x W).
template <int W, class T, class P>
void load_panel(const T* x, std::int64_t m, std::int64_t p0, P* panel) {
  for (int v = 0; v < W; ++v) {
    const T* row = x + (p0 + v) * m;
    for (std::int64_t j = 0; j < m; ++j) panel[j * W + v] = static_cast<P>(row[j]);
  }
}

template <class A>
void add_into(std::vector<double>& total, const std::vector<A>& part) noexcept {
  for (std::size_t k = 0; k < total.size(); ++k) total[k] += static_cast<double>(part[k]);
}

// R x for one panel of W vectors, threads over chunks when `threads` > 1. Each chunk sums in
// the input's type (as a CSR product would), the chunk sums are added in double.
// If `record` is not null it receives the walks of all columns, one part per chunk
// (forward_chunk); the chunks must then be equal but for the last one.
template <int W, class T>
void forward_panel(const BlockSparseMatrix& R, const ColumnWalks* walks,
                   const std::vector<double>& sig, const T* x,
                   std::int64_t m, std::int64_t p0,
                   const std::vector<std::pair<std::int64_t, std::int64_t>>& chunks, T* y,
                   bool half, int threads, ColumnWalks* record = nullptr) {
  const BlockSparseFamily& f = R.family();
  const ForwardLayout<W> lay = forward_layout<T, W>(f);
  const std::size_t size = static_cast<std::size_t>(lay.size(f.n_blocks()));
  std::vector<T> xp(static_cast<std::size_t>(m * W));
  load_panel<W>(x, m, p0, xp.data());
  std::vector<double> total(size, 0.0);
  if (record) record->init(f, chunks[0].second - chunks[0].first, chunks.size());
  if (threads <= 1) {
    std::vector<T> part(size);
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      std::fill(part.begin(), part.end(), T(0));
      forward_chunk<W, T>(R, walks, xp.data(), chunks[c].first, chunks[c].second, part.data(),
                          record, c);
      add_into(total, part);
    }
  } else {
    std::vector<std::vector<T>> parts(chunks.size());
    parallel_for(static_cast<std::int64_t>(chunks.size()), threads, [&](std::int64_t c) {
      const auto cu = static_cast<std::size_t>(c);
      auto& part = parts[cu];
      part.assign(size, T(0));
      forward_chunk<W, T>(R, walks, xp.data(), chunks[cu].first, chunks[cu].second, part.data(),
                          record, cu);
    });
    // The chunk sums are added and the panel's vectors expanded by the threads too (else one
    // thread does them while the others wait); each element still adds the chunks in order.
    constexpr std::int64_t kSpan = 8192;
    parallel_for((static_cast<std::int64_t>(size) + kSpan - 1) / kSpan, threads, [&](std::int64_t t) {
      const std::size_t k0 = static_cast<std::size_t>(t * kSpan);
      const std::size_t k1 = std::min(size, k0 + static_cast<std::size_t>(kSpan));
      for (const auto& part : parts)
        for (std::size_t k = k0; k < k1; ++k) total[k] += static_cast<double>(part[k]);
    });
  }
  const std::int64_t d = f.d();
  parallel_for(W, threads, [&](std::int64_t v) {
    forward_expand<W, T>(R, sig, total.data(), static_cast<int>(v),
                         half ? x + (p0 + v) * m : nullptr, y + (p0 + v) * d);
  });
}

// R^T y reads y through the same slots: a nonzero block (j, B) contributes
// sum_s c[s] u_B[s], with c = base_j times the block's flip signs (+-1 or 0) and u_B the
// block-row's slot values of y (its random-string entries, <s_m, y_m>, Enc's constant part, the
// two parity entries, twice each index-bit entry). The sum over s runs as four partial sums,
// slot s into partial s % 4 in increasing s, added as (p0 + p1) + (p2 + p3): one SIMD register
// across the slots for one vector, four registers across the vectors of a panel, and the same
// bits either way.
template <int W>
void transpose_slots(const BlockSparseFamily& f, const std::vector<double>& sig, const double* yp,
                     double* u) {
  const ForwardLayout<W> lay = forward_layout<double, W>(f);
  const std::int64_t b = f.block_size(), third = f.third(), L = f.index_bits();
  for (std::int64_t i = 0; i < f.n_blocks(); ++i)
    for (int v = 0; v < W; ++v) {
      const double* blk = yp + i * b * W + v;
      double* ui = u + i * lay.slots() * W + v;
      for (std::int64_t r = 0; r < third; ++r) ui[lay.s(r)] = blk[r * W];
      double sm = 0.0;
      for (std::int64_t r = 0; r < third; ++r)
        sm += sig[static_cast<std::size_t>(r)] * blk[(2 * third + r) * W];
      const double* enc = blk + third * W;
      double c = enc[0];  // Enc's constant part, with every index bit at -1
      for (std::int64_t p = L + 3; p < third; ++p) c += enc[p * W];
      for (std::int64_t t = 0; t < L; ++t) c -= enc[(1 + t) * W];
      ui[lay.m()] = sm;
      ui[lay.a()] = c;
      ui[lay.pm()] = enc[(L + 1) * W];
      ui[lay.ps()] = enc[(L + 2) * W];
      for (std::int64_t t = 0; t < L; ++t) ui[lay.bit(t)] = 2.0 * enc[(1 + t) * W];
    }
}

// q[i][0..H) += u_k[si][0..W) * (base[si] * sign[si]): slot si's part of W dot products, kept
// by si % 4 (i) in H registers of 4 doubles. Named and always inline, as panel_add.
template <int H>
RECSKETCH_ALWAYS_INLINE void transpose_add(typename Vec<double, 4>::type (&q)[4][H], int i,
                                           std::int64_t si, const double* bj, const double* sign,
                                           const double* uk) noexcept {
  constexpr int W = 4 * H;
  const double c = bj[si] * sign[si];
  for (int h = 0; h < H; ++h) {
    typename Vec<double, 4>::type uv;
    std::memcpy(&uv, uk + si * W + 4 * h, sizeof uv);
    q[i][h] += uv * c;
  }
}

// total[0..W) += column j's dot products with the slot values u of the block-rows of its walk
// (entries as stored, 16 or 32 bits); bj is the column's base. Called once per entry type rather
// than through a generic lambda, for the reason given at column_updates.
template <int W, class E>
RECSKETCH_ALWAYS_INLINE void transpose_entries(const E* entries, std::int64_t n, const double* u,
                                               std::int64_t row_size,
                                               const FlipSigns<double>& signs, const double* bj,
                                               std::int64_t slots, double* total) noexcept {
  using V = typename Vec<double, 4>::type;
  static_assert(W == 1 || W % 4 == 0, "panel widths are 1 or multiples of 4");
  for (std::int64_t k = 0; k < n; ++k) {
    const std::uint32_t e = entries[k];
    const double* uk = u + static_cast<std::int64_t>(e >> 3) * row_size;
    const double* sign = signs.row(e);
    if constexpr (W == 1) {
      V p = {0.0, 0.0, 0.0, 0.0};
      for (std::int64_t s = 0; s < slots; s += 4) {
        V bv, sv, uv;
        std::memcpy(&bv, bj + s, sizeof bv);
        std::memcpy(&sv, sign + s, sizeof sv);
        std::memcpy(&uv, uk + s, sizeof uv);
        p += (bv * sv) * uv;
      }
      total[0] += (p[0] + p[1]) + (p[2] + p[3]);
    } else {
      // Partial sums by slot % 4, each W/4 registers of 4 doubles (wider GCC vectors are
      // lowered through memory without AVX-512).
      constexpr int H = W / 4;
      V q[4][H] = {};
      std::int64_t s = 0;
      for (; s + 4 <= slots; s += 4)
        for (int i = 0; i < 4; ++i) transpose_add<H>(q, i, s + i, bj, sign, uk);
      for (int i = 0; s + i < slots; ++i) transpose_add<H>(q, i, s + i, bj, sign, uk);
      for (int h = 0; h < H; ++h) {
        const V contrib = (q[0][h] + q[1][h]) + (q[2][h] + q[3][h]);
        for (int v = 0; v < 4; ++v) total[4 * h + v] += contrib[v];
      }
    }
  }
}

// out[v][j] for the columns j in [j0, j1) of one panel; u holds the panel's slot values.
template <int W, class T>
RECSKETCH_ALWAYS_INLINE void transpose_columns_body(const BlockSparseMatrix& R,
                                                    const ColumnWalks* walks, const double* u,
                                                    const T* y, std::int64_t p0, std::int64_t j0,
                                                    std::int64_t j1, T* out, bool half) {
  const BlockSparseFamily& f = R.family();
  const ForwardLayout<W> lay = forward_layout<double, W>(f);
  const ForwardLayout<1> lay1{lay.third, lay.L, lay.align};
  const FlipSigns<double> signs(lay1);
  const ByteSigns<double>& byte_signs = ByteSigns<double>::get();
  const std::int64_t d = f.d(), slots = lay.slots(), row_size = slots * W;
  const double scale = f.scale();
  ColumnCode code(f.third());
  std::vector<double> base(static_cast<std::size_t>(slots), 0.0);
  std::vector<std::uint32_t> buffer(static_cast<std::size_t>(f.n_blocks()));
  PartCursor cursor(walks, j0);
  for (std::int64_t j = j0; j < j1; ++j) {
    code.load(R, j);
    column_base(code, byte_signs, lay1, j, base.data());
    const double* bj = base.data();
    double total[W] = {};
    const ColumnWalks::View walk = column_walk(R, walks, j, buffer.data(), cursor);
    if (walk.e16)
      transpose_entries<W>(walk.e16, walk.n, u, row_size, signs, bj, slots, total);
    else
      transpose_entries<W>(walk.e32, walk.n, u, row_size, signs, bj, slots, total);
    for (int v = 0; v < W; ++v) {
      const double rt = scale * total[v];
      T* o = out + (p0 + v) * d + j;
      *o = static_cast<T>(half ? 0.5 * (static_cast<double>(y[(p0 + v) * d + j]) + rt) : rt);
    }
  }
}

// transpose_columns_body for the ISAs of multiversion.hpp, chosen at load time, and for the
// baseline ISA only (tests: baseline_isa_forced), as forward_chunk.
template <int W, class T>
RECSKETCH_MULTIVERSION void transpose_columns_clones(const BlockSparseMatrix& R,
                                                     const ColumnWalks* walks, const double* u,
                                                     const T* y, std::int64_t p0, std::int64_t j0,
                                                     std::int64_t j1, T* out, bool half) {
  transpose_columns_body<W>(R, walks, u, y, p0, j0, j1, out, half);
}

template <int W, class T>
void transpose_columns_baseline(const BlockSparseMatrix& R, const ColumnWalks* walks,
                                const double* u, const T* y, std::int64_t p0, std::int64_t j0,
                                std::int64_t j1, T* out, bool half) {
  transpose_columns_body<W>(R, walks, u, y, p0, j0, j1, out, half);
}

template <int W, class T>
void transpose_columns(const BlockSparseMatrix& R, const ColumnWalks* walks, const double* u,
                       const T* y, std::int64_t p0, std::int64_t j0, std::int64_t j1, T* out,
                       bool half) {
  if (baseline_isa_forced().load(std::memory_order_relaxed))
    transpose_columns_baseline<W>(R, walks, u, y, p0, j0, j1, out, half);
  else
    transpose_columns_clones<W>(R, walks, u, y, p0, j0, j1, out, half);
}

// R^T y for one panel of W vectors, threads over groups of columns.
template <int W, class T>
void transpose_panel(const BlockSparseMatrix& R, const ColumnWalks* walks,
                     const std::vector<double>& sig, const T* y,
                     std::int64_t p0, T* out, bool half, int threads) {
  const BlockSparseFamily& f = R.family();
  const std::int64_t d = f.d();
  std::vector<double> yp(static_cast<std::size_t>(d * W));
  load_panel<W>(y, d, p0, yp.data());
  std::vector<double> u(static_cast<std::size_t>(forward_layout<double, W>(f).size(f.n_blocks())), 0.0);
  transpose_slots<W>(f, sig, yp.data(), u.data());
  constexpr std::int64_t kColumnsPerTask = 256;
  parallel_for((d + kColumnsPerTask - 1) / kColumnsPerTask, threads, [&](std::int64_t task) {
    const std::int64_t j0 = task * kColumnsPerTask, j1 = std::min(d, j0 + kColumnsPerTask);
    transpose_columns<W, T>(R, walks, u.data(), y, p0, j0, j1, out, half);
  });
}

// Whether at least a quarter of the m columns of x (n x m, row-major) hold a nonzero. Stops as
// soon as it knows, so a dense input costs about m/4 reads.
template <class T>
bool mostly_nonzero(const T* x, std::int64_t n, std::int64_t m) {
  const std::int64_t need = (m + 3) / 4;
  std::int64_t have = 0;
  for (std::int64_t j = 0; j < m && have < need; ++j)
    for (std::int64_t v = 0; v < n; ++v)
      if (x[v * m + j] != T(0)) {
        ++have;
        break;
      }
  return have >= need;
}

}  // namespace detail

// y = R x (or (x + R x)/2 if half) for the n rows of x (n x m, row-major, m <= d: columns m..d-1
// of x are taken as zero, so a short attribute vector costs m columns). y is n x d, row-major.
// half requires m == d.
template <class T>
void block_sparse_forward(const BlockSparseMatrix& R, const T* x, std::int64_t n, std::int64_t m,
                          T* y, bool half, int num_threads) {
  using namespace detail;
  const std::int64_t d = R.family().d();
  const std::int64_t chunk = (d + kColumnChunks - 1) / kColumnChunks;
  std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
  for (std::int64_t c = 0; c < kColumnChunks; ++c) {
    const std::int64_t j0 = c * chunk, j1 = std::min(m, (c + 1) * chunk);
    if (j0 < j1) chunks.emplace_back(j0, j1);
  }
  const std::vector<double> sig = signature_signs(R);
  const std::vector<Panel> panels = cut_panels(n);
  const int threads = resolve_threads(num_threads);
  if (n == 0) return;
  WalkCache& cache = WalkCache::global();
  std::shared_ptr<const ColumnWalks> walks = cache.find(R);
  auto run = [&](const Panel& p, int inner_threads, ColumnWalks* record) {
    with_width(p.width, [&](auto w) {
      forward_panel<decltype(w)::value, T>(R, walks.get(), sig, x, m, p.first, chunks, y, half,
                                           inner_threads, record);
    });
  };
  std::size_t first = 0;
  // Only full products of mostly nonzero inputs fill the walk cache (see walk_cache.hpp). The
  // first panel records the walks it generates (threads over its chunks), the others read them:
  // the matrix is walked once, inside its first product.
  if (!walks && m == d && cache.would_keep(R) && mostly_nonzero(x, n, m)) {
    auto record = std::make_shared<ColumnWalks>();
    run(panels[0], threads, record.get());
    cache.put(R, record);
    walks = std::move(record);
    first = 1;
  }
  const std::int64_t n_panels = static_cast<std::int64_t>(panels.size() - first);
  // Threads over panels when there are enough of them, else over the chunks of each panel;
  // both add the same chunk sums in the same order.
  const bool by_panel = n_panels >= threads || chunks.size() <= 1;
  if (by_panel)
    parallel_for(n_panels, threads, [&](std::int64_t k) {
      run(panels[first + static_cast<std::size_t>(k)], 1, nullptr);
    });
  else
    for (std::size_t k = first; k < panels.size(); ++k) run(panels[k], threads, nullptr);
}

// out = R^T y (or (y + R^T y)/2 if half) for the n rows of y (n x d, row-major); out is n x d.
template <class T>
void block_sparse_transpose(const BlockSparseMatrix& R, const T* y, std::int64_t n, T* out,
                            bool half, int num_threads) {
  using namespace detail;
  const std::vector<double> sig = signature_signs(R);
  const int threads = resolve_threads(num_threads);
  if (n == 0) return;
  const std::shared_ptr<const ColumnWalks> walks = WalkCache::global().get(R, threads);
  for (const Panel& p : cut_panels(n))
    with_width(p.width, [&](auto w) {
      transpose_panel<decltype(w)::value, T>(R, walks.get(), sig, y, p.first, out, half, threads);
    });
}

// Nonzero blocks per column (the exact squared norm of column j is count_j * b / (d q)), for
// the first n_cols columns (all of them when n_cols < 0).
inline void block_sparse_column_counts(const BlockSparseMatrix& R, std::int64_t* counts,
                                       int num_threads, std::int64_t n_cols = -1) {
  const std::int64_t d = n_cols < 0 ? R.family().d() : std::min(n_cols, R.family().d());
  parallel_for((d + 1023) / 1024, num_threads, [&](std::int64_t task) {
    const std::int64_t j1 = std::min(d, (task + 1) * 1024);
    for (std::int64_t j = task * 1024; j < j1; ++j) {
      std::int64_t c = 0;
      R.walk_column(j, [&](const BlockFlips&) { ++c; });
      counts[j] = c;
    }
  });
}

// Calls emit(j, row, value) for every stored entry of columns [j0, j1), column by column and
// in increasing row order within a column. `code` and `enc` are the caller's per-thread scratch.
template <class Emit>
void block_sparse_entries(const BlockSparseMatrix& R, const std::vector<double>& sig,
                          std::int64_t j0, std::int64_t j1, Emit&& emit) {
  using namespace detail;
  const BlockSparseFamily& f = R.family();
  const std::int64_t b = f.block_size(), third = f.third();
  const int L = f.index_bits();
  const double scale = f.scale();
  ColumnCode code(third);
  std::vector<std::int8_t> enc(static_cast<std::size_t>(third));
  for (std::int64_t j = j0; j < j1; ++j) {
    code.load(R, j);
    R.walk_column(j, [&](const BlockFlips& fl) {
      const int bm = parity_negative(fl.neg_m, code.m0_negative) ? -1 : 1;
      const int bs = parity_negative(fl.neg_s, code.s0_negative) ? -1 : 1;
      enc_pattern(j, bm, bs, L, third, enc.data());
      const double fs = fl.neg_s ? -scale : scale, fc = fl.neg_c ? -scale : scale,
                   fm = fl.neg_m ? -scale : scale;
      const std::int64_t base = fl.block * b;
      for (std::int64_t r = 0; r < b; ++r) {
        double value;
        if (r < third)
          value = fs * code.sign<double>(r);
        else if (r < 2 * third)
          value = fc * enc[static_cast<std::size_t>(r - third)];
        else
          value = fm * sig[static_cast<std::size_t>(r - 2 * third)];
        emit(j, base + r, value);
      }
    });
  }
}

// Fills the CSC arrays of the first n_cols columns (all when n_cols < 0); indptr (n_cols + 1
// entries) must already hold the prefix sums of b * counts.
template <class I, class V>
void block_sparse_fill_csc(const BlockSparseMatrix& R, const I* indptr, I* indices, V* data,
                           int num_threads, std::int64_t n_cols = -1) {
  const BlockSparseFamily& f = R.family();
  const std::int64_t d = n_cols < 0 ? f.d() : std::min(n_cols, f.d());
  const std::vector<double> sig = detail::signature_signs(R);
  parallel_for((d + 255) / 256, num_threads, [&](std::int64_t task) {
    const std::int64_t j0 = task * 256, j1 = std::min(d, j0 + 256);
    std::int64_t k = static_cast<std::int64_t>(indptr[j0]);
    block_sparse_entries(R, sig, j0, j1, [&](std::int64_t, std::int64_t row, double value) {
      indices[k] = static_cast<I>(row);
      data[k] = static_cast<V>(value);
      ++k;
    });
  });
}

// Writes the matrix into out (d x d, row-major, zero-filled by the caller): no sparse form in
// between, so materialising it holds the result and nothing of its size besides. Threads take
// whole columns: no two write the same entry.
inline void block_sparse_fill_dense(const BlockSparseMatrix& R, double* out, int num_threads) {
  const std::int64_t d = R.family().d();
  const std::vector<double> sig = detail::signature_signs(R);
  parallel_for((d + 255) / 256, num_threads, [&](std::int64_t task) {
    const std::int64_t j0 = task * 256, j1 = std::min(d, j0 + 256);
    block_sparse_entries(R, sig, j0, j1, [&](std::int64_t j, std::int64_t row, double value) {
      out[row * d + j] = value;
    });
  });
}

// Upper bound on the bytes block_sparse_forward (transpose = false) or block_sparse_transpose
// allocates besides its output for n vectors of m columns (the bindings add it to the output
// before checking the allocation limit). A panel (cut_panels: widest W = 8, 4 or 1 vectors)
// holds its inputs (m x W) and a double accumulator of every block-row's slots. Threads run
// whole panels (each with one chunk part besides its accumulator), or, when there are fewer
// panels than threads (or the first panel records the walks of a full product), the column
// chunks of one panel at a time (one part per chunk that holds columns below m). The walk
// cache is bounded by its own limit.
inline std::uint64_t block_sparse_scratch_bytes(const BlockSparseFamily& f, std::int64_t n,
                                                std::int64_t m, bool transpose, int num_threads) {
  constexpr std::uint64_t item = 8;  // the widest element
  const std::uint64_t W = n >= 8 ? 8 : n >= 4 ? 4 : 1;
  // slots per block-row, rounded up for any SIMD alignment
  const auto slots = static_cast<std::uint64_t>(f.third() + 4 + f.index_bits() + 16);
  const std::uint64_t panel = static_cast<std::uint64_t>(f.n_blocks()) * slots * W * item;
  if (transpose) return static_cast<std::uint64_t>(f.d()) * W * item + panel;
  const auto un = static_cast<std::uint64_t>(std::max<std::int64_t>(0, n));
  const std::uint64_t panels = un / 8 + un % 8 / 4 + un % 4;
  const std::uint64_t threads = static_cast<std::uint64_t>(resolve_threads(num_threads));
  const std::uint64_t input = static_cast<std::uint64_t>(m) * W * item;
  const std::uint64_t running = std::max<std::uint64_t>(1, std::min(threads, panels));
  const std::uint64_t by_panel = running * (input + 2 * panel);
  const std::int64_t chunk = (f.d() + kColumnChunks - 1) / kColumnChunks;
  const auto chunks = static_cast<std::uint64_t>(
      std::min<std::int64_t>(kColumnChunks, (m + chunk - 1) / chunk));
  if (threads > 1 && chunks > 1 && (panels <= threads || m == f.d()))
    return std::max(by_panel, input + (1 + chunks) * panel);
  return by_panel;
}

}  // namespace recsketch
