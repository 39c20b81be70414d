# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The exact suppression index: a sorted hash index with a directory and a blocked Bloom filter.

Layout (all numpy arrays, so they can be memory-mapped from a snapshot file):
- ``directory``: uint32[2^d + 1]; bucket b (the top d bits of the permuted number) holds the
  entries ``words[directory[b]:directory[b+1]]``.
- ``words``: uint64 per entry: the rest of the permuted number, the scope id and the 8-bit
  category mask, packed ``remainder | scope | mask``; sorted within each bucket, so one number's
  entries for every scope sit side by side.
- ``bloom``: uint64[8 * blocks]; one 512-bit block per number, k bits per (number, scope).
- ``sender_scope`` / ``sender_entity``: per sender id, its own scope id and its entity's scope
  id (NO_SCOPE when none). Scope 0 is global.

Nothing here knows files, names or the network: ids in, scope codes out.
"""

cimport numpy as cnp
import numpy as np
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc

from number cimport AN_NUM_OK, AN_NUMBER_LIMIT, an_check_e164

cnp.import_array()

cdef extern from "index.h" nogil:
    int ANNING_DEBUG
    int AN_NUMBER_BITS
    int AN_BLOOM_BLOCK_WORDS
    uint64_t an_perm50(uint64_t x)
    uint64_t an_unperm50(uint64_t x)
    int AN_BLOOM_K
    uint64_t an_bloom_hash(uint64_t h)
    uint64_t an_bloom_block(uint64_t g, uint64_t blocks)
    uint64_t an_bloom_key(uint64_t g, uint32_t scope)
    void an_bloom_set(uint64_t *block, uint64_t key)
    uint64_t an_bloom_test(const uint64_t *block, uint64_t key)
    void an_prefetch(const void *p)
    void an_bloom_init()

an_bloom_init()
DEBUG = bool(ANNING_DEBUG)
NO_SCOPE = 0xFFFFFFFF
UNKNOWN_SENDER = 0xFFFFFFFF
GLOBAL_SCOPE = 0
MAX_ENTRIES = 0xFFFFFFFF - 1
BLOOM_K = AN_BLOOM_K

cdef enum:
    SCOPE_NONE = 0
    SCOPE_SENDER = 1
    SCOPE_ENTITY = 2
    SCOPE_GLOBAL = 3
    GROUP = 16          # checks per pipeline stage
    AHEAD = 2           # groups whose Bloom blocks are fetched ahead of the Bloom test
    FETCH_LAG = 2       # groups between the directory prefetch and reading the slot
    RESOLVE_LAG = 4     # groups between the Bloom test and resolving (entries prefetched)
    RING = 8            # groups in flight (AHEAD + RESOLVE_LAG + 1, rounded up to 2^k)
    SCAN_LIMIT = 16     # buckets up to this size are scanned, larger ones searched
    ERR_NUMBER = 1
    ERR_SENDER = 2

cdef uint32_t C_NO_SCOPE = 0xFFFFFFFF


cdef struct IndexView:
    const uint32_t *directory
    const uint64_t *words
    const uint64_t *bloom
    const uint32_t *sender_scope
    const uint32_t *sender_entity
    uint64_t senders
    uint64_t extended    # sender ids past `senders` that only events know (unknown here)
    uint64_t bloom_blocks
    uint64_t remainder_mask
    uint64_t scope_mask
    int remainder_bits
    int shift            # scope bits + 8: where the remainder starts in a word
    int bloom_k


cdef inline Py_ssize_t lower_bound(const uint64_t *words, Py_ssize_t lo, Py_ssize_t hi,
                                   uint64_t target) noexcept nogil:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if words[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline uint8_t mask_of(const IndexView *v, uint64_t h, uint32_t scope) noexcept nogil:
    """The category mask of the entry (number h, scope), 0 when there is none."""
    cdef uint64_t b = h >> v.remainder_bits
    cdef Py_ssize_t lo = v.directory[b], hi = v.directory[b + 1]
    cdef uint64_t key = ((h & v.remainder_mask) << v.shift) | (<uint64_t>scope << 8)
    cdef Py_ssize_t i = lower_bound(v.words, lo, hi, key)
    if i < hi and (v.words[i] >> 8) == (key >> 8):
        return <uint8_t>(v.words[i] & 0xFF)
    return 0


cdef inline uint8_t resolve(const IndexView *v, uint64_t h, uint32_t own, uint32_t entity,
                            int bit) noexcept nogil:
    """The most specific scope among (h, own), (h, entity), (h, global) whose mask has `bit`."""
    cdef uint64_t b = h >> v.remainder_bits
    cdef Py_ssize_t i, lo = v.directory[b], hi = v.directory[b + 1]
    cdef uint64_t w, r = h & v.remainder_mask, wr
    cdef uint32_t scope
    cdef uint8_t best = SCOPE_NONE
    if hi - lo <= SCAN_LIMIT:
        for i in range(lo, hi):
            w = v.words[i]
            wr = w >> v.shift
            if wr < r:
                continue
            if wr > r:
                break
            if not ((w >> bit) & 1):
                continue
            scope = <uint32_t>((w >> 8) & v.scope_mask)
            if scope == own:
                return SCOPE_SENDER
            if scope == entity:
                best = SCOPE_ENTITY
            elif scope == 0 and best == SCOPE_NONE:
                best = SCOPE_GLOBAL
        return best
    # A number with many scopes: one binary search per scope asked about.
    if own != C_NO_SCOPE and (mask_of(v, h, own) >> bit) & 1:
        return SCOPE_SENDER
    if entity != C_NO_SCOPE and (mask_of(v, h, entity) >> bit) & 1:
        return SCOPE_ENTITY
    if (mask_of(v, h, 0) >> bit) & 1:
        return SCOPE_GLOBAL
    return SCOPE_NONE


cdef inline uint64_t bloom_may_have(const uint64_t *block, uint64_t g, uint32_t own,
                                    uint32_t entity) noexcept nogil:
    # Probing NO_SCOPE too is harmless (at worst a false positive) and keeps this branch-free.
    return (an_bloom_test(block, an_bloom_key(g, 0)) | an_bloom_test(block, an_bloom_key(g, own))
            | an_bloom_test(block, an_bloom_key(g, entity)))


cdef struct Group:
    # One group of checks in flight: hashes, scopes to probe, Bloom blocks, candidates.
    uint64_t h[GROUP]
    uint64_t g[GROUP]
    uint32_t own[GROUP]
    uint32_t entity[GROUP]
    const uint64_t *block[GROUP]
    uint16_t cand[GROUP]
    Py_ssize_t base
    Py_ssize_t size
    Py_ssize_t count


cdef inline int take_check(const IndexView *v, Group *grp, Py_ssize_t j,
                           const uint32_t *sender_ids, const uint64_t *numbers,
                           Py_ssize_t *bad) noexcept nogil:
    """The group's check j: its number and sender id checked (0, or an ERR_* code with its
    position in *bad), its sender's scopes and its hash."""
    cdef uint64_t number = numbers[grp.base + j]
    cdef uint32_t sid = sender_ids[grp.base + j]
    if number == 0 or number >= AN_NUMBER_LIMIT:
        bad[0] = grp.base + j
        return ERR_NUMBER
    if sid < v.senders:
        grp.own[j] = v.sender_scope[sid]
        grp.entity[j] = v.sender_entity[sid]
    elif sid == C_NO_SCOPE or sid - v.senders < v.extended:
        # UNKNOWN_SENDER, or a sender only events know: only global entries can match
        grp.own[j] = C_NO_SCOPE
        grp.entity[j] = C_NO_SCOPE
    else:
        bad[0] = grp.base + j
        return ERR_SENDER
    grp.h[j] = an_perm50(number)
    return 0


cdef inline int prepare(const IndexView *v, Group *grp, const uint32_t *sender_ids,
                        const uint64_t *numbers, Py_ssize_t base, Py_ssize_t m,
                        Py_ssize_t *bad) noexcept nogil:
    """Stage 1: hash a group, look up its senders' scopes, prefetch its Bloom blocks."""
    cdef Py_ssize_t j
    cdef int status
    grp.base = base
    grp.size = m
    for j in range(m):
        status = take_check(v, grp, j, sender_ids, numbers, bad)
        if status:
            return status
        grp.g[j] = an_bloom_hash(grp.h[j])
        grp.block[j] = v.bloom + an_bloom_block(grp.g[j], v.bloom_blocks) * AN_BLOOM_BLOCK_WORDS
        an_prefetch(grp.block[j])
    return 0


cdef inline void filter_group(const IndexView *v, Group *grp, uint8_t *out) noexcept nogil:
    """Stage 2: the Bloom test; the few that may be present prefetch their directory slot."""
    cdef Py_ssize_t j, count = 0
    for j in range(grp.size):
        out[grp.base + j] = SCOPE_NONE
        grp.cand[count] = <uint16_t>j
        count += bloom_may_have(grp.block[j], grp.g[j], grp.own[j], grp.entity[j])
    grp.count = count
    for j in range(count):
        an_prefetch(&v.directory[grp.h[grp.cand[j]] >> v.remainder_bits])


cdef inline void fetch_entries(const IndexView *v, Group *grp) noexcept nogil:
    """Stage 3: with the directory slot at hand, prefetch the bucket's entries."""
    cdef Py_ssize_t c
    cdef uint64_t bucket
    for c in range(grp.count):
        bucket = grp.h[grp.cand[c]] >> v.remainder_bits
        an_prefetch(&v.words[v.directory[bucket]])


cdef inline void resolve_group(const IndexView *v, Group *grp, int bit,
                               uint8_t *out) noexcept nogil:
    """Stage 4: exact answers for the candidates."""
    cdef Py_ssize_t c, j
    for c in range(grp.count):
        j = grp.cand[c]
        out[grp.base + j] = resolve(v, grp.h[j], grp.own[j], grp.entity[j], bit)


cdef int check_list(const IndexView *v, const uint32_t *sender_ids, const uint64_t *numbers,
                    Py_ssize_t n, int bit, uint8_t *out, Py_ssize_t *bad) noexcept nogil:
    """Answer n checks into out[] (scope codes); returns 0, or an ERR_* code with the offending
    position in *bad.

    Software-pipelined over groups of GROUP checks, four stages deep, so that each cache miss
    (Bloom block, directory slot, entries) is in flight while other groups are worked on:
    at step t group t+AHEAD is hashed, group t filtered, group t-1's entries fetched, group t-2
    resolved."""
    cdef Group ring[RING]
    cdef Py_ssize_t groups = (n + GROUP - 1) // GROUP, t, start
    cdef int status
    for t in range(-AHEAD, groups + RESOLVE_LAG):
        if 0 <= t + AHEAD < groups:
            start = (t + AHEAD) * GROUP
            status = prepare(v, &ring[(t + AHEAD) % RING], sender_ids, numbers, start,
                             min(<Py_ssize_t>GROUP, n - start), bad)
            if status:
                return status
        if 0 <= t < groups:
            filter_group(v, &ring[t % RING], out)
        if 0 <= t - FETCH_LAG < groups:
            fetch_entries(v, &ring[(t - FETCH_LAG) % RING])
        if 0 <= t - RESOLVE_LAG < groups:
            resolve_group(v, &ring[(t - RESOLVE_LAG) % RING], bit, out)
    return 0


include "index_build.pxi"
include "index_overlay.pxi"
include "index_latest.pxi"
include "index_fold.pxi"


def build_bloom(const uint32_t[::1] directory, const uint64_t[::1] words, int remainder_bits,
                int scope_bits, double bits_per_entry, allocate=None):
    cdef Py_ssize_t n = words.shape[0], b, i
    cdef Py_ssize_t buckets = directory.shape[0] - 1
    cdef uint64_t blocks = max(<uint64_t>1, <uint64_t>(n * bits_per_entry / 512.0 + 0.999))
    bloom_arr = (allocate or np.zeros)(blocks * AN_BLOOM_BLOCK_WORDS, np.uint64)
    cdef uint64_t[::1] bloom = bloom_arr
    cdef uint64_t g, scope_mask = (1ULL << scope_bits) - 1
    cdef int shift = scope_bits + 8
    with nogil:
        for b in range(buckets):
            for i in range(directory[b], directory[b + 1]):
                g = an_bloom_hash((<uint64_t>b << remainder_bits) | (words[i] >> shift))
                an_bloom_set(&bloom[an_bloom_block(g, blocks) * AN_BLOOM_BLOCK_WORDS],
                             an_bloom_key(g, <uint32_t>((words[i] >> 8) & scope_mask)))
    return bloom_arr


cdef class IndexCore:
    """Read-only view of the arrays of one index; safe to share between threads."""

    cdef IndexView v
    cdef readonly object directory, words, bloom, sender_scope, sender_entity
    cdef readonly int remainder_bits, scope_bits, bloom_k

    def __cinit__(self, directory, words, bloom, sender_scope, sender_entity,
                  int remainder_bits, int scope_bits, int bloom_k):
        cdef const uint32_t[::1] d = directory
        cdef const uint64_t[::1] w = words
        cdef const uint64_t[::1] f = bloom
        cdef const uint32_t[::1] s = sender_scope
        cdef const uint32_t[::1] e = sender_entity
        if d.shape[0] < 2 or (d.shape[0] - 1) & (d.shape[0] - 2):
            raise ValueError(f"directory: {d.shape[0]} slots is not 2^d + 1")
        if remainder_bits + scope_bits + 8 > 64 or scope_bits < 1 or scope_bits > 31:
            raise ValueError(f"remainder_bits {remainder_bits} and scope_bits {scope_bits} "
                             "do not fit one 64-bit word")
        if f.shape[0] == 0 or f.shape[0] % AN_BLOOM_BLOCK_WORDS or bloom_k != AN_BLOOM_K:
            raise ValueError(f"bloom: {f.shape[0]} words, k={bloom_k} is not a Bloom filter")
        if s.shape[0] != e.shape[0]:
            raise ValueError("sender_scope and sender_entity differ in length")
        if d[d.shape[0] - 1] != w.shape[0] or d[0] != 0:
            raise ValueError(f"directory ends at {d[d.shape[0] - 1]}, words has {w.shape[0]}")
        # the range first: a shift past the int's width is undefined (UBSan, fuzz_snapshot)
        if remainder_bits < 0 or remainder_bits > AN_NUMBER_BITS or \
                (<uint64_t>1 << (AN_NUMBER_BITS - remainder_bits)) != <uint64_t>(d.shape[0] - 1):
            raise ValueError(f"remainder_bits {remainder_bits} does not match the directory")
        # Every lookup walks words[d[b]:d[b + 1]]: a directory out of order (a crafted
        # snapshot whose checksums hold) made it read far outside the words.
        cdef Py_ssize_t b, unordered = -1
        with nogil:
            for b in range(d.shape[0] - 1):
                if d[b] > d[b + 1]:
                    unordered = b
                    break
        if unordered >= 0:
            raise ValueError(f"directory: slot {unordered + 1} ({d[unordered + 1]}) is before "
                             f"slot {unordered} ({d[unordered]})")
        self.directory, self.words, self.bloom = directory, words, bloom
        self.sender_scope, self.sender_entity = sender_scope, sender_entity
        self.remainder_bits, self.scope_bits, self.bloom_k = remainder_bits, scope_bits, bloom_k
        self.v.directory = &d[0]
        self.v.words = &w[0] if w.shape[0] else NULL
        self.v.bloom = &f[0]
        self.v.sender_scope = &s[0] if s.shape[0] else NULL
        self.v.sender_entity = &e[0] if e.shape[0] else NULL
        self.v.senders = s.shape[0]
        self.v.extended = 0
        self.v.bloom_blocks = f.shape[0] // AN_BLOOM_BLOCK_WORDS
        self.v.remainder_bits = remainder_bits
        self.v.remainder_mask = (1ULL << remainder_bits) - 1
        self.v.scope_mask = (1ULL << scope_bits) - 1
        self.v.shift = scope_bits + 8
        self.v.bloom_k = bloom_k

    def __len__(self):
        return self.words.shape[0]

    def check_ids(self, const uint32_t[::1] sender_ids, const uint64_t[::1] numbers, int bit,
                  uint8_t[::1] out=None, DecisionTable decisions=None,
                  const uint32_t[::1] extra=None):
        """Scope codes for n checks of category bit `bit`; the GIL is released throughout.

        With `decisions`, the checks of numbers that have real-time events are decided with
        them in the same pass; `extra[i]` is the scope id of sender id `senders + i`, a sender
        only events know."""
        cdef Py_ssize_t n = numbers.shape[0], bad = -1
        cdef int status
        cdef IndexView view = self.v
        cdef const uint64_t[::1] keys
        cdef const uint64_t[::1] filter_
        cdef Py_ssize_t extras = extra.shape[0] if extra is not None else 0
        cdef const uint32_t *extra_p = &extra[0] if extras else NULL
        view.extended = extras
        if sender_ids.shape[0] != n:
            raise ValueError(f"sender_ids has {sender_ids.shape[0]} items, numbers {n}")
        if bit < 0 or bit > 7:
            raise ValueError(f"category bit: {bit} is outside 0..7")
        if out is None:
            out = np.empty(n, dtype=np.uint8)
        elif out.shape[0] != n:
            raise ValueError(f"out has {out.shape[0]} items, numbers {n}")
        if n == 0:
            return np.asarray(out)
        cdef OverlayView events
        cdef const OverlayView *ov = NULL
        if decisions is not None and decisions.keys:
            # held here: a growing table publishes new arrays (both taken under the GIL,
            # which the table's publishing holds)
            keys = decisions._keys
            filter_ = decisions._filter
            events.keys = &keys[0]
            events.mask = keys.shape[0] // 2 - 1
            events.shift = _table_shift(keys.shape[0] // 2)
            events.filter = &filter_[0]
            events.filter_shift = _table_shift(filter_.shape[0])
            events.extra = extra_p
            events.extras = extras
            ov = &events
        with nogil:
            if ov != NULL:
                status = check_with_events(&view, ov, &sender_ids[0], &numbers[0], n, bit,
                                           &out[0], &bad)
            else:
                status = check_list(&view, &sender_ids[0], &numbers[0], n, bit, &out[0], &bad)
        if status == ERR_NUMBER:
            raise ValueError(f"numbers[{bad}]: {numbers[bad]} is not an E.164 number")
        if status == ERR_SENDER:
            raise ValueError(f"sender_ids[{bad}]: {sender_ids[bad]} is not a sender id")
        return np.asarray(out)

    cpdef int check_one(self, uint32_t sender_id, uint64_t number, int bit) except -1:
        """One check: the batch kernel with one item."""
        cdef uint8_t out
        cdef Py_ssize_t bad = -1
        cdef int status
        if bit < 0 or bit > 7:
            raise ValueError(f"category bit: {bit} is outside 0..7")
        status = check_list(&self.v, &sender_id, &number, 1, bit, &out, &bad)
        if status == ERR_NUMBER:
            raise ValueError(f"number: {number} is not an E.164 number")
        if status == ERR_SENDER:
            raise ValueError(f"sender_id: {sender_id} is not a sender id")
        return out

    def positions(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes):
        """Where each (number, scope id) entry stands in `words` (-1: none), and its mask."""
        cdef Py_ssize_t n = numbers.shape[0], i, lo, hi, k
        cdef uint64_t h, key
        if scopes.shape[0] != n:
            raise ValueError("numbers and scopes differ in length")
        at_arr = np.full(n, -1, np.int64)
        mask_arr = np.zeros(n, np.uint8)
        cdef int64_t[::1] at = at_arr
        cdef uint8_t[::1] mask = mask_arr
        with nogil:
            for i in range(n):
                if numbers[i] == 0 or numbers[i] >= AN_NUMBER_LIMIT:
                    continue
                h = an_perm50(numbers[i])
                lo = self.v.directory[h >> self.v.remainder_bits]
                hi = self.v.directory[(h >> self.v.remainder_bits) + 1]
                key = ((h & self.v.remainder_mask) << self.v.shift) | (<uint64_t>scopes[i] << 8)
                k = lower_bound(self.v.words, lo, hi, key)
                if k < hi and (self.v.words[k] >> 8) == (key >> 8):
                    at[i] = k
                    mask[i] = <uint8_t>(self.v.words[k] & 0xFF)
        return at_arr, mask_arr

    def entries_at(self, const int64_t[::1] positions):
        """The entries at these positions of `words`: (numbers, scope ids, masks)."""
        cdef Py_ssize_t n = positions.shape[0], i, b, lo, hi, at
        cdef Py_ssize_t buckets = self.directory.shape[0] - 1
        numbers_arr = np.empty(n, dtype=np.uint64)
        scopes_arr = np.empty(n, dtype=np.uint32)
        masks_arr = np.empty(n, dtype=np.uint8)
        cdef uint64_t[::1] numbers = numbers_arr
        cdef uint32_t[::1] scopes = scopes_arr
        cdef uint8_t[::1] masks = masks_arr
        cdef uint64_t w
        for i in range(n):
            if positions[i] < 0 or positions[i] >= self.words.shape[0]:
                raise ValueError(f"positions[{i}]: {positions[i]} is not an entry")
        with nogil:
            for i in range(n):
                at = positions[i]
                lo, hi = 0, buckets  # the bucket holding entry `at`: the last b with dir[b] <= at
                while hi - lo > 1:
                    b = (lo + hi) >> 1
                    if self.v.directory[b] <= at:
                        lo = b
                    else:
                        hi = b
                w = self.v.words[at]
                numbers[i] = an_unperm50((<uint64_t>lo << self.v.remainder_bits) |
                                         (w >> self.v.shift))
                scopes[i] = <uint32_t>((w >> 8) & self.v.scope_mask)
                masks[i] = <uint8_t>(w & 0xFF)
        return numbers_arr, scopes_arr, masks_arr

    def number_entries(self, uint64_t number):
        """Every entry of one number: (scope ids, masks, positions in `words`)."""
        cdef uint64_t h
        cdef Py_ssize_t lo, hi, k
        if number == 0 or number >= AN_NUMBER_LIMIT:
            raise ValueError(f"number: {number} is not an E.164 number")
        h = an_perm50(number)
        lo = self.v.directory[h >> self.v.remainder_bits]
        hi = self.v.directory[(h >> self.v.remainder_bits) + 1]
        scopes, masks, where = [], [], []
        for k in range(lo, hi):
            if (self.v.words[k] >> self.v.shift) == (h & self.v.remainder_mask):
                scopes.append(<uint32_t>((self.v.words[k] >> 8) & self.v.scope_mask))
                masks.append(<uint8_t>(self.v.words[k] & 0xFF))
                where.append(k)
        return (np.array(scopes, np.uint32), np.array(masks, np.uint8),
                np.array(where, np.int64))

    def mask(self, uint64_t number, uint32_t scope):
        """The category mask stored for (number, scope); 0 when there is no entry."""
        if number == 0 or number >= AN_NUMBER_LIMIT:
            raise ValueError(f"number: {number} is not an E.164 number")
        return mask_of(&self.v, an_perm50(number), scope)

    def bloom_hits(self, const uint32_t[::1] sender_ids, const uint64_t[::1] numbers):
        """How many of these checks pass the Bloom filter (for its false-positive rate)."""
        cdef Py_ssize_t i, n = numbers.shape[0], hits = 0
        cdef uint64_t h, g
        cdef uint32_t own, entity, sid
        if sender_ids.shape[0] != n:
            raise ValueError(f"sender_ids has {sender_ids.shape[0]} items, numbers {n}")
        with nogil:
            for i in range(n):
                sid = sender_ids[i]
                own = self.v.sender_scope[sid] if sid < self.v.senders else C_NO_SCOPE
                entity = self.v.sender_entity[sid] if sid < self.v.senders else C_NO_SCOPE
                h = an_perm50(numbers[i])
                g = an_bloom_hash(h)
                hits += bloom_may_have(
                    self.v.bloom + an_bloom_block(g, self.v.bloom_blocks) *
                    AN_BLOOM_BLOCK_WORDS, g, own, entity)
        return hits

    def first_missing(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes,
                      const uint8_t[::1] masks):
        """Position of the first (number, scope id, mask) the index does not fully cover, or
        -1: the no-false-negative check of a build against its input."""
        cdef Py_ssize_t i, n = numbers.shape[0], missing = -1
        if scopes.shape[0] != n or masks.shape[0] != n:
            raise ValueError("numbers, scopes and masks differ in length")
        with nogil:
            for i in range(n):
                if (mask_of(&self.v, an_perm50(numbers[i]), scopes[i]) & masks[i]) != masks[i]:
                    missing = i
                    break
        return missing

    def entries(self):
        """All entries as arrays (numbers, scope ids, masks), in index order."""
        cdef Py_ssize_t n = self.words.shape[0], b, i
        cdef Py_ssize_t buckets = self.directory.shape[0] - 1
        numbers_arr = np.empty(n, dtype=np.uint64)
        scopes_arr = np.empty(n, dtype=np.uint32)
        masks_arr = np.empty(n, dtype=np.uint8)
        cdef uint64_t[::1] numbers = numbers_arr
        cdef uint32_t[::1] scopes = scopes_arr
        cdef uint8_t[::1] masks = masks_arr
        cdef uint64_t w
        with nogil:
            for b in range(buckets):
                for i in range(self.v.directory[b], self.v.directory[b + 1]):
                    w = self.v.words[i]
                    numbers[i] = an_unperm50((<uint64_t>b << self.v.remainder_bits) |
                                             (w >> self.v.shift))
                    scopes[i] = <uint32_t>((w >> 8) & self.v.scope_mask)
                    masks[i] = <uint8_t>(w & 0xFF)
        return numbers_arr, scopes_arr, masks_arr

    def verify(self, uint64_t scopes):
        """Check every invariant; return None, or a message saying the first one broken.

        Directory monotone; within a bucket keys strictly increasing (sorted, no duplicates);
        masks non-empty; scope ids below `scopes`; every entry is in the Bloom filter and is
        found by the lookup (no false negatives); numbers E.164; sender tables in range."""
        cdef Py_ssize_t b, i, buckets = self.directory.shape[0] - 1
        cdef uint64_t w, h, prev, scope
        cdef uint64_t number
        cdef int why = 0
        cdef Py_ssize_t at = -1
        with nogil:
            for b in range(buckets):
                if self.v.directory[b] > self.v.directory[b + 1]:
                    why, at = 1, b
                    break
                prev = 0
                for i in range(self.v.directory[b], self.v.directory[b + 1]):
                    w = self.v.words[i]
                    h = (<uint64_t>b << self.v.remainder_bits) | (w >> self.v.shift)
                    scope = (w >> 8) & self.v.scope_mask
                    number = an_unperm50(h)
                    if i > self.v.directory[b] and (w >> 8) <= (prev >> 8):
                        why = 2
                    elif (w & 0xFF) == 0:
                        why = 3
                    elif scope >= scopes:
                        why = 4
                    elif not an_bloom_test(
                            self.v.bloom + an_bloom_block(an_bloom_hash(h), self.v.bloom_blocks)
                            * AN_BLOOM_BLOCK_WORDS, an_bloom_key(an_bloom_hash(h),
                                                                 <uint32_t>scope)):
                        why = 5
                    elif mask_of(&self.v, h, <uint32_t>scope) != (w & 0xFF):
                        why = 6
                    elif an_check_e164(number) != AN_NUM_OK:
                        why = 7
                    if why:
                        at = i
                        break
                    prev = w
                if why:
                    break
            if not why:
                for i in range(<Py_ssize_t>self.v.senders):
                    if self.v.sender_scope[i] >= scopes or (
                            self.v.sender_entity[i] != C_NO_SCOPE and
                            self.v.sender_entity[i] >= scopes):
                        why, at = 8, i
                        break
        if not why:
            return None
        return ("directory is not monotone at bucket", "keys are not strictly sorted at entry",
                "empty category mask at entry", "scope id out of range at entry",
                "Bloom filter misses entry", "lookup misses entry",
                "number is not E.164 at entry", "sender table points outside the scopes at",
                )[why - 1] + f" {at}"
