/* A hash table from byte strings to int64 values, for the CSV parser: a snapshot repeats a few
 * tens of thousands of senders (and a handful of categories and sources) over hundreds of
 * millions of rows, so each distinct text is resolved once and later rows cost one lookup,
 * with no Python object made for them. Keys are copied into an arena the table owns. */
#ifndef ANNING_STRTAB_H
#define ANNING_STRTAB_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t *hashes; /* 0: empty slot */
    int64_t *values;
    size_t *offsets;
    uint32_t *lengths;
    size_t capacity, count;
    char *arena;
    size_t arena_used, arena_capacity;
} an_strtab;

static inline uint64_t an_str_hash(const unsigned char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xBF58476D1CE4E5B9ULL), w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x94D049BB133111EBULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
    h *= 0x94D049BB133111EBULL;
    h ^= h >> 32;
    return h | 1;
}

static inline int an_strtab_init(an_strtab *t, size_t capacity) {
    memset(t, 0, sizeof *t);
    t->capacity = capacity;
    t->hashes = (uint64_t *)calloc(capacity, sizeof(uint64_t));
    t->values = (int64_t *)malloc(capacity * sizeof(int64_t));
    t->offsets = (size_t *)malloc(capacity * sizeof(size_t));
    t->lengths = (uint32_t *)malloc(capacity * sizeof(uint32_t));
    t->arena_capacity = 1 << 16;
    t->arena = (char *)malloc(t->arena_capacity);
    return t->hashes && t->values && t->offsets && t->lengths && t->arena ? 0 : -1;
}

static inline void an_strtab_free(an_strtab *t) {
    free(t->hashes);
    free(t->values);
    free(t->offsets);
    free(t->lengths);
    free(t->arena);
    memset(t, 0, sizeof *t);
}

/* The slot of key (found: hashes[slot] != 0), or of the empty slot where it would go. */
static inline size_t an_strtab_slot(const an_strtab *t, const unsigned char *s, size_t n,
                                    uint64_t h) {
    size_t mask = t->capacity - 1, i = h & mask;
    while (t->hashes[i]) {
        if (t->hashes[i] == h && t->lengths[i] == n && memcmp(t->arena + t->offsets[i], s, n) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static inline int an_strtab_get(const an_strtab *t, const unsigned char *s, size_t n,
                                int64_t *value) {
    size_t i = an_strtab_slot(t, s, n, an_str_hash(s, n));
    if (!t->hashes[i]) return 0;
    *value = t->values[i];
    return 1;
}

static inline int an_strtab_grow(an_strtab *t) {
    an_strtab bigger = *t;
    size_t capacity = t->capacity * 2;
    bigger.hashes = (uint64_t *)calloc(capacity, sizeof(uint64_t));
    bigger.values = (int64_t *)malloc(capacity * sizeof(int64_t));
    bigger.offsets = (size_t *)malloc(capacity * sizeof(size_t));
    bigger.lengths = (uint32_t *)malloc(capacity * sizeof(uint32_t));
    if (!bigger.hashes || !bigger.values || !bigger.offsets || !bigger.lengths) {
        free(bigger.hashes);
        free(bigger.values);
        free(bigger.offsets);
        free(bigger.lengths);
        return -1;
    }
    bigger.capacity = capacity;
    for (size_t i = 0; i < t->capacity; i++) {
        if (!t->hashes[i]) continue;
        size_t j = t->hashes[i] & (capacity - 1);
        while (bigger.hashes[j]) j = (j + 1) & (capacity - 1);
        bigger.hashes[j] = t->hashes[i];
        bigger.values[j] = t->values[i];
        bigger.offsets[j] = t->offsets[i];
        bigger.lengths[j] = t->lengths[i];
    }
    free(t->hashes);
    free(t->values);
    free(t->offsets);
    free(t->lengths);
    *t = bigger;
    return 0;
}

static inline int an_strtab_put(an_strtab *t, const unsigned char *s, size_t n, int64_t value) {
    if ((t->count + 1) * 2 > t->capacity && an_strtab_grow(t) < 0) return -1;
    uint64_t h = an_str_hash(s, n);
    size_t i = an_strtab_slot(t, s, n, h);
    if (!t->hashes[i]) {
        if (t->arena_used + n > t->arena_capacity) {
            size_t capacity = t->arena_capacity;
            while (t->arena_used + n > capacity) capacity *= 2;
            char *arena = (char *)realloc(t->arena, capacity);
            if (!arena) return -1;
            t->arena = arena;
            t->arena_capacity = capacity;
        }
        memcpy(t->arena + t->arena_used, s, n);
        t->hashes[i] = h;
        t->offsets[i] = t->arena_used;
        t->lengths[i] = (uint32_t)n;
        t->arena_used += n;
        t->count++;
    }
    t->values[i] = value;
    return 0;
}

#endif
