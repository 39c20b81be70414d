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
 * and each scope's key comes from one multiply of that hash. */
#define AN_BLOOM_K 3 /* bits per key */
#define AN_BLOOM_PATTERN_BITS 10

/* Pattern-blocked Bloom filter: a key sets the K bits of one of 1024 fixed 64-bit patterns in
 * one word of its block. A probe is two loads and a compare, with no branch. The patterns are
 * part of the snapshot format: changing them needs a new format version. */
static uint64_t an_bloom_patterns[1 << AN_BLOOM_PATTERN_BITS];

static inline void an_bloom_init(void) {
    uint64_t x = 0x243F6A8885A308D3ULL;
    for (int i = 0; i < (1 << AN_BLOOM_PATTERN_BITS); i++) {
        uint64_t m = 0;
        while (__builtin_popcountll(m) < AN_BLOOM_K) {
            x += 0x9E3779B97F4A7C15ULL;
            m |= 1ULL << (an_mix64(x) & 63);
        }
        an_bloom_patterns[i] = m;
    }
}

static inline uint64_t an_bloom_hash(uint64_t h) { return (h + 1) * 0xD1342543DE82EF95ULL; }

static inline uint64_t an_bloom_block(uint64_t g, uint64_t blocks) {
    return (uint64_t)(((unsigned __int128)g * blocks) >> 64);
}

/* The key of (number, scope): two (word, pattern) pairs of 13 bits. */
static inline uint64_t an_bloom_key(uint64_t g, uint32_t scope) {
    return ((g ^ ((uint64_t)scope * 0x9E3779B97F4A7C15ULL)) * 0xD6E8FEB86659FD93ULL) >> 38;
}

static inline void an_bloom_set(uint64_t *block, uint64_t key) {
    block[key & 7] |= an_bloom_patterns[(key >> 3) & 1023];
    block[(key >> 13) & 7] |= an_bloom_patterns[key >> 16];
}

static inline uint64_t an_bloom_test(const uint64_t *block, uint64_t key) {
    uint64_t p1 = an_bloom_patterns[(key >> 3) & 1023], p2 = an_bloom_patterns[key >> 16];
    return ((block[key & 7] & p1) == p1) & ((block[(key >> 13) & 7] & p2) == p2);
}

static inline void an_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
