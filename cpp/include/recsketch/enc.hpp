// Algorithm 1 (Enc) and its inverse, the block decoder of Section 4.2.
//
// Conventions (0-based, fixed here once): Enc(j, b_m, b_s) has b/3 entries of +-1 (the 1/sqrt(dq)
// scale is applied by the caller):
//   position 0          : +1
//   positions 1 .. L    : the L = ceil(log2 d) bits of the 0-based column j, most significant
//                         first (position 1 + t holds bit L-1-t), 0 -> -1 and 1 -> +1
//   position L + 1      : b_m,  position L + 2 : b_s
//   positions L+3 ..    : +1 padding
// The paper's Enc writes the 1-based j-1; encoding the 0-based j is the same code.
#pragma once

#include <cstdint>

namespace recsketch {

// Enc's +-1 pattern into out[0 .. third).
inline void enc_pattern(std::int64_t j, int b_m, int b_s, int index_bits, std::int64_t third,
                        std::int8_t* out) noexcept {
  for (std::int64_t p = 0; p < third; ++p) out[p] = 1;
  for (int t = 0; t < index_bits; ++t)
    out[1 + t] = ((j >> (index_bits - 1 - t)) & 1) ? std::int8_t{1} : std::int8_t{-1};
  out[index_bits + 1] = static_cast<std::int8_t>(b_m);
  out[index_bits + 2] = static_cast<std::int8_t>(b_s);
}

enum class BlockStatus : std::int8_t {
  ok = 0,
  not_a_sign_pattern = 1,  // an entry is neither +1 nor -1
  bad_padding = 2,         // Enc's constant +1 entries are not constant
  index_out_of_range = 3,  // decoded column >= d
  parity_mismatch = 4,     // the two parity bits disagree on the block's sign
};

struct DecodedBlock {
  BlockStatus status = BlockStatus::not_a_sign_pattern;
  std::int64_t column = -1;  // decoded 0-based j
  int b_m = 0, b_s = 0;      // parity bits f'_m, f'_s
  int sign = 0;              // sign g of the coefficient that produced the block
};

// Decode one rounded block u = [u_s ; u_c ; u_m] (b entries of +-1) of a d x d matrix.
// If u = g * [f_s s_s ; f_c Enc(j, f'_m, f'_s) ; f_m s_m] then u_c[0] = g f_c, so
// c = u_c * u_c[0] is Enc's pattern; and u_m[0] = g b_m, u_s[0] = g b_s give g twice.
inline DecodedBlock decode_block(const std::int8_t* u, std::int64_t b, int index_bits,
                                 std::int64_t d) noexcept {
  DecodedBlock out;
  for (std::int64_t p = 0; p < b; ++p)
    if (u[p] != 1 && u[p] != -1) return out;
  const std::int64_t third = b / 3;
  const std::int8_t* u_s = u;
  const std::int8_t* u_c = u + third;
  const std::int8_t* u_m = u + 2 * third;
  const int lead = u_c[0];
  for (std::int64_t p = index_bits + 3; p < third; ++p)
    if (u_c[p] * lead != 1) {
      out.status = BlockStatus::bad_padding;
      return out;
    }
  std::int64_t j = 0;
  for (int t = 0; t < index_bits; ++t) j = (j << 1) | (u_c[1 + t] * lead > 0 ? 1 : 0);
  out.column = j;
  out.b_m = u_c[index_bits + 1] * lead;
  out.b_s = u_c[index_bits + 2] * lead;
  if (j >= d) {
    out.status = BlockStatus::index_out_of_range;
    return out;
  }
  const int g_m = u_m[0] * out.b_m;
  const int g_s = u_s[0] * out.b_s;
  if (g_m != g_s) {
    out.status = BlockStatus::parity_mismatch;
    return out;
  }
  out.sign = g_m;
  out.status = BlockStatus::ok;
  return out;
}

}  // namespace recsketch
