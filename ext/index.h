/* Hashing, Bloom probes and debug switch for the suppression index (ext/index.pyx).
 *
 * Keys are (number, scope). A number (E.164, < 10^15 < 2^50) is first put through a bijection
 * on 50 bits, so that the top bits spread evenly over the directory and the rest, kept in the
 * entry, still identify the number exactly: no two numbers share a (bucket, remainder) pair.
 */
#ifndef ANNING_INDEX_H
#define ANNING_INDEX_H

#include <stdint.h>

#ifndef ANNING_DEBUG
#define ANNING_DEBUG 0
#endif

#define AN_NUMBER_BITS 50
#define AN_NUMBER_MASK ((1ULL << AN_NUMBER_BITS) - 1)
#define AN_BLOOM_BLOCK_WORDS 8 /* 512 bits: one cache line */

/* Odd multipliers are invertible modulo 2^50; x ^= x >> s with 2s >= 50 is its own inverse. */
#define AN_M1 0x9E3779B97F4A7C15ULL
#define AN_M2 0xBF58476D1CE4E5B9ULL
#define AN_M3 0x94D049BB133111EBULL

static inline uint64_t an_perm50(uint64_t x) {
    x = (x * AN_M1) & AN_NUMBER_MASK;
    x ^= x >> 25;
    x = (x * AN_M2) & AN_NUMBER_MASK;
    x ^= x >> 26;
    x = (x * AN_M3) & AN_NUMBER_MASK;
    x ^= x >> 25;
    return x;
}

static inline uint64_t an_inverse_mod50(uint64_t a) {
    uint64_t x = a; /* Newton: each step doubles the correct low bits (3 -> 96) */
    for (int i = 0; i < 5; i++) x *= 2 - a * x;
    return x & AN_NUMBER_MASK;
}

static inline uint64_t an_unperm50(uint64_t x) {
    x ^= x >> 25;
    x = (x * an_inverse_mod50(AN_M3)) & AN_NUMBER_MASK;
    x ^= x >> 26;
    x = (x * an_inverse_mod50(AN_M2)) & AN_NUMBER_MASK;
    x ^= x >> 25;
    x = (x * an_inverse_mod50(AN_M1)) & AN_NUMBER_MASK;
    return x;
}

static inline uint64_t an_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

/* The Bloom filter hashes a number once (an_bloom_hash); the block depends on the number
 * alone, so the sender, entity and global probes of one check all read the same cache line,
 * and each scope's probe bits come from one multiply of that hash. */
#define AN_BLOOM_K 5 /* probes per key; 5 x 9 bits from the top of a 64-bit product */

/* h is already a good mix of the number: one multiply spreads its 50 bits over 64. */
static inline uint64_t an_bloom_hash(uint64_t h) { return (h + 1) * 0xD1342543DE82EF95ULL; }

static inline uint64_t an_bloom_block(uint64_t g, uint64_t blocks) {
    return (uint64_t)(((unsigned __int128)g * blocks) >> 64);
}

static inline uint64_t an_bloom_key(uint64_t g, uint32_t scope) {
    return ((g ^ ((uint64_t)scope * 0x9E3779B97F4A7C15ULL)) * 0xD6E8FEB86659FD93ULL) >> 19;
}

/* Probe i reads a word (3 bits) and a bit of it (6 bits). */
static inline void an_bloom_set(uint64_t *block, uint64_t key) {
    for (int i = 0; i < AN_BLOOM_K; i++, key >>= 9) block[key & 7] |= 1ULL << ((key >> 3) & 63);
}

/* Branch-free: a Bloom miss is the common case and must not cost a misprediction. */
static inline uint64_t an_bloom_test(const uint64_t *block, uint64_t key) {
    uint64_t hit = 1;
    for (int i = 0; i < AN_BLOOM_K; i++, key >>= 9) hit &= block[key & 7] >> ((key >> 3) & 63);
    return hit & 1;
}

static inline void an_prefetch(const void *p) { __builtin_prefetch(p, 0, 1); }

#endif
