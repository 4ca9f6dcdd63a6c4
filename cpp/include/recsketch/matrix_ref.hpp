// A non-owning handle on a matrix of either family, so that the sketch recursion and the
// decoders are written once for both.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "block_sparse_kernels.hpp"
#include "orthogonal.hpp"

namespace recsketch {

class MatrixRef {
 public:
  MatrixRef() = default;
  explicit MatrixRef(const BlockSparseMatrix* m) noexcept : block_sparse_(m) {}
  explicit MatrixRef(const OrthogonalMatrix* m) noexcept : orthogonal_(m) {}

  bool valid() const noexcept { return block_sparse_ != nullptr || orthogonal_ != nullptr; }

  std::int64_t d() const noexcept {
    return block_sparse_ ? block_sparse_->family().d() : orthogonal_->d();
  }

  // y = R x (or (x + R x)/2 if half) for the n rows of x (n x m, m <= d; half needs m == d).
  template <class T>
  void forward(const T* x, std::int64_t n, std::int64_t m, T* y, bool half,
               int num_threads) const {
    if (block_sparse_)
      block_sparse_forward(*block_sparse_, x, n, m, y, half, num_threads);
    else
      orthogonal_apply(*orthogonal_, x, n, m, y, false, half, num_threads);
  }

  // Bytes one product of n full-length vectors at num_threads threads allocates besides its
  // output (the sketch's allocation check counts its products with it).
  std::uint64_t scratch_bytes(std::int64_t n, int num_threads) const {
    return block_sparse_ ? block_sparse_scratch_bytes(block_sparse_->family(), n, d(), false,
                                                      num_threads)
                         : orthogonal_scratch_bytes(d(), n, num_threads);
  }

  // out = R^T y (or (y + R^T y)/2 if half) for the n rows of y (n x d).
  template <class T>
  void transpose(const T* y, std::int64_t n, T* out, bool half, int num_threads) const {
    if (block_sparse_)
      block_sparse_transpose(*block_sparse_, y, n, out, half, num_threads);
    else
      orthogonal_apply(*orthogonal_, y, n, d(), out, true, half, num_threads);
  }

 private:
  const BlockSparseMatrix* block_sparse_ = nullptr;
  const OrthogonalMatrix* orthogonal_ = nullptr;
};

}  // namespace recsketch
