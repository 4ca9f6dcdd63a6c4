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

// Decode Enc from sign bits: c_bits holds the Enc sub-block's first min(b/3, 64) entries (bit p
// set: entry p is -1), s0_negative / m0_negative the signs of the first entries of the random
// string and signature sub-blocks. If the block is g * [f_s s_s ; f_c Enc(j, f'_m, f'_s) ;
// f_m s_m] then entry 0 of the Enc sub-block is g f_c, so flipping by it gives Enc's pattern;
// and u_m[0] = g b_m, u_s[0] = g b_s give g twice. The one home of the decoding rules.
inline DecodedBlock decode_enc_bits(std::uint64_t c_bits, bool s0_negative, bool m0_negative,
                                    std::int64_t third, int index_bits, std::int64_t d) noexcept {
  DecodedBlock out;
  const std::int64_t width = third < 64 ? third : 64;
  const std::uint64_t ones = width == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << width) - 1;
  const std::uint64_t c = (c_bits & 1) ? (c_bits ^ ones) : c_bits;  // bit set: Enc entry -1
  const std::uint64_t padding = ones & ~((std::uint64_t{1} << (index_bits + 3)) - 1);
  if (c & padding) {
    out.status = BlockStatus::bad_padding;
    return out;
  }
  std::int64_t j = 0;
  for (int t = 0; t < index_bits; ++t)
    j = (j << 1) | static_cast<std::int64_t>(((c >> (1 + t)) & 1) == 0);
  out.column = j;
  out.b_m = ((c >> (index_bits + 1)) & 1) ? -1 : 1;
  out.b_s = ((c >> (index_bits + 2)) & 1) ? -1 : 1;
  if (j >= d) {
    out.status = BlockStatus::index_out_of_range;
    return out;
  }
  const int g_m = (m0_negative ? -1 : 1) * out.b_m;
  const int g_s = (s0_negative ? -1 : 1) * out.b_s;
  if (g_m != g_s) {
    out.status = BlockStatus::parity_mismatch;
    return out;
  }
  out.sign = g_m;
  out.status = BlockStatus::ok;
  return out;
}

// Decode one rounded block u = [u_s ; u_c ; u_m] (b entries of +-1) of a d x d matrix.
inline DecodedBlock decode_block(const std::int8_t* u, std::int64_t b, int index_bits,
                                 std::int64_t d) noexcept {
  for (std::int64_t p = 0; p < b; ++p)
    if (u[p] != 1 && u[p] != -1) return DecodedBlock{};
  const std::int64_t third = b / 3;
  const std::int8_t* u_c = u + third;
  for (std::int64_t p = 64; p < third; ++p)  // padding past the 64 entries the bits hold
    if (u_c[p] != u_c[0]) {
      DecodedBlock out;
      out.status = BlockStatus::bad_padding;
      return out;
    }
  std::uint64_t c_bits = 0;
  for (std::int64_t p = 0; p < third && p < 64; ++p)
    c_bits |= static_cast<std::uint64_t>(u_c[p] < 0) << p;
  return decode_enc_bits(c_bits, u[0] < 0, u[2 * third] < 0, third, index_bits, d);
}

}  // namespace recsketch
