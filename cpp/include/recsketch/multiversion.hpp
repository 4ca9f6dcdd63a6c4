// RECSKETCH_MULTIVERSION: compile a hot loop twice and pick at load time.
#pragma once

// The hot loops are compiled twice on x86-64 Linux with GCC, for the baseline ISA and for AVX2,
// and chosen at load time (ifunc): portable wheels that still use AVX2 where it exists. The loops
// are element-wise adds and products (no FMA: -ffp-contract=off, and AVX2 alone does not enable
// FMA), so both versions produce the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(RECSKETCH_NO_MULTIVERSION)
#define RECSKETCH_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define RECSKETCH_MULTIVERSION
#endif
