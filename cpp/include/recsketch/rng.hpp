// Counter-based random bits for recsketch.
//
// Design notes
// - Every random word is a pure function of (seed, matrix key, stream tag, column, draw index):
//   no generator state is carried between columns, so any column can be produced in any thread,
//   in any order, with the same bits on every platform and for every thread count.
// - The mixer is the SplitMix64 finaliser (Steele, Lea, Flood 2014; Stafford's variant 13). It is
//   integer-only, so its output is identical on every machine. No std::*_distribution is used:
//   their output differs between standard libraries.
// - A stream is SplitMix64 seeded at stream_state(...): word k is mix64(state + (k + 1) * gamma).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace recsketch {

inline constexpr std::uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

inline constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Hash of two words; order matters (combine(a, b) != combine(b, a) in general).
inline constexpr std::uint64_t combine(std::uint64_t a, std::uint64_t b) noexcept {
  return mix64(a ^ mix64(b + kGoldenGamma));
}

// Which random quantity a stream draws. Values are part of the format: never renumber.
enum class Stream : std::uint64_t {
  matrix_signature = 1,  // sigma_m, one per matrix
  random_string = 2,     // sigma_{s,j}, one per column
  block_walk = 3,        // gaps between nonzero blocks and the flips f_s, f_c, f_m, per column
  orthogonal_signs = 4,  // the three diagonal sign vectors of the orthogonal family
};

// The part of a stream's state shared by all columns of one (matrix, tag): hoisted out of
// per-column loops.
inline constexpr std::uint64_t stream_prefix(std::uint64_t seed, std::uint64_t key,
                                             Stream tag) noexcept {
  return combine(combine(seed, key), static_cast<std::uint64_t>(tag));
}

inline constexpr std::uint64_t stream_state(std::uint64_t prefix, std::uint64_t column) noexcept {
  return combine(prefix, column);
}

// State of the stream (tag, column) of the matrix (seed, key).
inline constexpr std::uint64_t stream_state(std::uint64_t seed, std::uint64_t key, Stream tag,
                                            std::uint64_t column) noexcept {
  return stream_state(stream_prefix(seed, key, tag), column);
}

// Word k (k = 0, 1, ...) of a stream.
inline constexpr std::uint64_t stream_word(std::uint64_t state, std::uint64_t k) noexcept {
  return mix64(state + (k + 1) * kGoldenGamma);
}

// ---- Matrix keys --------------------------------------------------------------------------
// A matrix is named by a 64-bit key derived from its role. Python's hash() is salted per
// process, so names are hashed here with FNV-1a over their UTF-8 bytes, then mixed.
inline constexpr std::uint64_t fnv1a64(std::string_view bytes) noexcept {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001B3ULL;
  }
  return h;
}

enum class Role : std::uint64_t { module = 0x4D4F44554C45ULL, position = 0x504F534954494FULL };

// R[M, slot] for module name M, slot in {0, 1, 2}.
inline constexpr std::uint64_t module_key(std::string_view name, std::uint64_t slot) noexcept {
  return combine(combine(static_cast<std::uint64_t>(Role::module), fnv1a64(name)), slot);
}

// R[i] for tuple position i >= 1.
inline constexpr std::uint64_t position_key(std::uint64_t i) noexcept {
  return combine(static_cast<std::uint64_t>(Role::position), i);
}

// Fill `n_bits` random bits of a stream into 64-bit words (bit r of the result is bit r % 64 of
// word r / 64). Used for sign vectors: bit set means -1.
inline void stream_bits(std::uint64_t state, std::size_t n_bits, std::uint64_t* words) noexcept {
  const std::size_t n_words = (n_bits + 63) / 64;
  for (std::size_t k = 0; k < n_words; ++k) words[k] = stream_word(state, k);
  if (n_bits % 64 != 0) words[n_words - 1] &= (std::uint64_t{1} << (n_bits % 64)) - 1;
}

inline constexpr bool bit_at(const std::uint64_t* words, std::size_t r) noexcept {
  return (words[r / 64] >> (r % 64)) & 1U;
}

}  // namespace recsketch
