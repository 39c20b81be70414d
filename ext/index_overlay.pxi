# Real-time events in the compiled check (included by _index.pyx).
#
# The engine resolves every event against the snapshot when it takes it (latest statement per
# (number, scope, category) wins, reassignments drop what is older) and keeps the outcome here:
# per (number, scope id) which category bits the events decide (`decided`) and, of those, which
# are opted out (`optout`). A check whose number has such keys is decided level by level in the
# list's own pipeline (`check_with_events`, at the end of this file), GIL-free: where a key
# decides the bit, its answer; where not, the snapshot's entry. A small filter of the numbers
# with keys lets the checks of all other numbers pass the table by.
#
# One writer (the engine, under its lock) and many readers without the GIL: a slot is two
# aligned 64-bit words, the key's number (0: free) and (scope << 16 | decided << 8 | optout).
# A key's home slot is its number's (open addressing, linear probing): the keys of a number
# lie next to each other, so a check finds all the scopes it asks about in one cache line. A
# new slot's second word is stored before its first; an update stores the second word only; a
# slot is never freed; a new number's filter bits are set before its key is. Growing fills a
# new table (or filter) and only then publishes it; a reader keeps the ones it started with.

cdef extern from *:
    """
    /* A number's home slot starts a group of 4 slots, one 64-byte line in a table that is
       large enough to matter (the caller's allocator gives those on fresh pages), so that a
       check finds a number's keys in one line, mostly. */
    static inline uint64_t anning_key_slot(uint64_t number, int shift) {
        return ((number * 0xD6E8FEB86659FD93ULL) >> shift) & ~(uint64_t)3;
    }
    static inline uint64_t anning_number_slot(uint64_t number, int shift) {
        return (number * 0x9E3779B97F4A7C15ULL) >> shift;
    }
    #define anning_store_barrier() __atomic_signal_fence(__ATOMIC_RELEASE)
    /* The filter of numbers with keys: one 64-bit word a number (its hash's top bits), two
       bits set in it (the six bits below those, twice). */
    static inline uint64_t anning_filter_word(uint64_t number, int shift) {
        return (number * 0xBF58476D1CE4E5B9ULL) >> shift;
    }
    static inline uint64_t anning_filter_bits(uint64_t number, int shift) {
        uint64_t h = number * 0xBF58476D1CE4E5B9ULL;
        return (1ULL << ((h >> (shift - 6)) & 63)) | (1ULL << ((h >> (shift - 12)) & 63));
    }
    """
    uint64_t anning_key_slot(uint64_t number, int shift) nogil
    uint64_t anning_number_slot(uint64_t number, int shift) nogil
    void anning_store_barrier() nogil
    uint64_t anning_filter_word(uint64_t number, int shift) nogil
    uint64_t anning_filter_bits(uint64_t number, int shift) nogil


cdef enum:
    OV_CHUNK = 4096     # rows set between two looks at the table's size
    FILTER_BITS = 16    # bits of the filter a number with keys (1-2% false positives)


cdef inline bint in_filter(const uint64_t *words, int shift, uint64_t number) noexcept nogil:
    """Whether `number` may have keys (never false for one that has)."""
    cdef uint64_t bits = anning_filter_bits(number, shift)
    return (words[anning_filter_word(number, shift)] & bits) == bits


cdef inline void _filter_add(uint64_t *words, int shift, uint64_t number) noexcept nogil:
    words[anning_filter_word(number, shift)] |= anning_filter_bits(number, shift)


cdef inline int _table_shift(Py_ssize_t size) noexcept nogil:
    cdef int shift = 64
    while size > 1:
        size >>= 1
        shift -= 1
    return shift


cdef inline Py_ssize_t _find_key(const uint64_t *slots, Py_ssize_t size, uint64_t number,
                                 uint32_t scope) noexcept nogil:
    """The slot of (number, scope), or the free slot where it would go (as -1 - slot)."""
    return _find_key_at(slots, size, _table_shift(size), number, scope)


cdef inline Py_ssize_t _find_key_at(const uint64_t *slots, Py_ssize_t size, int shift,
                                    uint64_t number, uint32_t scope) noexcept nogil:
    """`_find_key` with the table's shift worked out by the caller (once a batch)."""
    cdef uint64_t mask = size - 1
    cdef uint64_t i = anning_key_slot(number, shift)
    cdef uint64_t held
    while True:
        held = slots[2 * i]
        if held == 0:
            return -1 - <Py_ssize_t>i
        if held == number and <uint32_t>(slots[2 * i + 1] >> 16) == scope:
            return <Py_ssize_t>i
        i = (i + 1) & mask


cdef inline bint _has_number(const uint64_t *slots, Py_ssize_t size,
                             uint64_t number) noexcept nogil:
    return _has_number_at(slots, size, _table_shift(size), number)


cdef inline bint _has_number_at(const uint64_t *slots, Py_ssize_t size, int shift,
                                uint64_t number) noexcept nogil:
    cdef uint64_t mask = size - 1
    cdef uint64_t i = anning_number_slot(number, shift)
    cdef uint64_t held = slots[i]
    while held != 0 and held != number:
        i = (i + 1) & mask
        held = slots[i]
    return held != 0


cdef struct DecisionView:
    uint64_t *keys
    Py_ssize_t size
    uint64_t *filter
    int filter_shift
    uint64_t *held
    Py_ssize_t held_size
    Py_ssize_t added_keys
    Py_ssize_t added_numbers


cdef inline void _set_bit(DecisionView *v, uint64_t number, uint32_t scope, uint8_t bit,
                          bint decided, bint optout) noexcept nogil:
    """One category bit of one key: decided or not and, if so, opted out or not (a key is made
    only for a bit that is decided)."""
    cdef uint64_t one = <uint64_t>1 << bit, value
    cdef Py_ssize_t at = _find_key(v.keys, v.size, number, scope)
    if at >= 0:
        value = v.keys[2 * at + 1] & ~((one << 8) | one)
    elif not decided:
        return
    else:
        value = <uint64_t>scope << 16
    if decided:
        value |= one << 8
        if optout:
            value |= one
    if at >= 0:
        v.keys[2 * at + 1] = value
        return
    at = -1 - at
    v.keys[2 * at + 1] = value
    _filter_add(v.filter, v.filter_shift, number)
    anning_store_barrier()
    v.keys[2 * at] = number
    v.added_keys += 1
    v.added_numbers += _add_number_at(v.held, v.held_size, number)


cdef class DecisionTable:
    """(number, scope id) -> which category bits events decide, and which of those opt out."""

    cdef object _keys       # uint64[2 * size]: (number, scope << 16 | decided << 8 | optout)
    cdef object _numbers    # uint64[size2]: the numbers that have keys
    # uint64[words]: a Bloom filter of those numbers, small enough to stay in the caches: a
    # check of a number without events (most of a port's) skips the keys, a miss to memory
    cdef object _filter
    cdef object _allocate   # (n, dtype) -> zeroed array: the tables as they grow
    cdef readonly Py_ssize_t keys, numbers

    def __cinit__(self, allocate=None):
        # a check probes the keys at random: large tables want huge pages (the caller's
        # allocator; nothing here knows how to ask for them)
        self._allocate = allocate or np.zeros
        self._keys = np.zeros(2 * 64, np.uint64)
        self._numbers = np.zeros(64, np.uint64)
        self._filter = np.zeros(64, np.uint64)
        self.keys = 0
        self.numbers = 0

    def __len__(self):
        return self.keys

    @property
    def nbytes(self):
        return self._keys.nbytes + self._numbers.nbytes + self._filter.nbytes

    cdef int _reserve(self, Py_ssize_t more) except -1:
        """Grow (at most half full) before `more` keys come: fill a new table, then publish."""
        cdef Py_ssize_t size = self._keys.shape[0] // 2, grown = size, i
        cdef uint64_t[::1] old
        cdef uint64_t[::1] table
        cdef Py_ssize_t at
        cdef int shift
        while (self.keys + more) * 2 > grown:
            grown *= 2
        if grown != size:
            new_keys = self._allocate(2 * grown, np.uint64)
            table = new_keys
            old = self._keys
            with nogil:
                for i in range(size):
                    if old[2 * i] != 0:
                        at = -1 - _find_key(&table[0], grown, old[2 * i],
                                            <uint32_t>(old[2 * i + 1] >> 16))
                        table[2 * at + 1] = old[2 * i + 1]
                        table[2 * at] = old[2 * i]
            self._keys = new_keys  # published whole: readers hold the old one meanwhile
        size = self._numbers.shape[0]
        grown = size
        while (self.numbers + more) * 2 > grown:
            grown *= 2
        if grown != size:
            new_numbers = self._allocate(grown, np.uint64)
            table = new_numbers
            old = self._numbers
            with nogil:
                for i in range(size):
                    if old[i] != 0:
                        _add_number(table, old[i])
            self._numbers = new_numbers
        size = self._filter.shape[0]
        grown = size
        while (self.numbers + more) * FILTER_BITS > grown * 64:
            grown *= 2
        if grown != size:
            new_filter = self._allocate(grown, np.uint64)
            table = new_filter
            old = self._numbers
            shift = _table_shift(grown)
            with nogil:
                for i in range(old.shape[0]):
                    if old[i] != 0:
                        _filter_add(&table[0], shift, old[i])
            self._filter = new_filter
        return 0

    def get(self, uint64_t number, uint32_t scope):
        """(decided, optout) of a key; (0, 0) when it has none."""
        cdef const uint64_t[::1] keys = self._keys
        cdef Py_ssize_t at = _find_key(&keys[0], keys.shape[0] // 2, number, scope)
        if at < 0:
            return 0, 0
        return int((keys[2 * at + 1] >> 8) & 0xFF), int(keys[2 * at + 1] & 0xFF)

    def set_bits(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes,
                 const uint8_t[::1] bits, const uint8_t[::1] decided,
                 const uint8_t[::1] optout):
        """Set one category bit of a key a row: decided or not and, if so, opted out or not;
        the key's other bits keep theirs. A key is made only for a bit that is decided."""
        cdef Py_ssize_t n = numbers.shape[0], i, at
        if scopes.shape[0] != n or bits.shape[0] != n or decided.shape[0] != n \
                or optout.shape[0] != n:
            raise ValueError("numbers, scopes, bits, decided and optout differ in length")
        for i in range(n):
            if numbers[i] == 0 or numbers[i] >= AN_NUMBER_LIMIT:
                raise ValueError(f"numbers[{i}]: {numbers[i]} is not an E.164 number")
            if bits[i] > 7:
                raise ValueError(f"bits[{i}]: {bits[i]} is not a category bit (0-7)")
        cdef Py_ssize_t start = 0, stop
        cdef DecisionView view
        while start < n:
            # grown a chunk at a time: a reserve for every row at once (most rows are bits of
            # keys already there, or of one new key) left big tables a quarter full, and the
            # checks' random reads spread over twice the memory
            stop = min(start + OV_CHUNK, n)
            self._reserve(stop - start)
            view = self._view()
            with nogil:
                for i in range(start, stop):
                    _set_bit(&view, numbers[i], scopes[i], bits[i], decided[i], optout[i])
            self.keys += view.added_keys
            self.numbers += view.added_numbers
            start = stop

    cdef DecisionView _view(self):
        """The table's arrays as pointers, for a pass without the GIL (room reserved first)."""
        cdef DecisionView view
        cdef uint64_t[::1] keys = self._keys
        cdef uint64_t[::1] held = self._numbers
        cdef uint64_t[::1] filter_ = self._filter
        view.keys = &keys[0]
        view.size = keys.shape[0] // 2
        view.filter = &filter_[0]
        view.filter_shift = _table_shift(filter_.shape[0])
        view.held = &held[0]
        view.held_size = held.shape[0]
        view.added_keys = 0
        view.added_numbers = 0
        return view

    def get_many(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes):
        """(decided, optout) of each key: zeros where it has none."""
        cdef Py_ssize_t n = numbers.shape[0], i, at
        if scopes.shape[0] != n:
            raise ValueError("numbers and scopes differ in length")
        decided_, optout_ = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        cdef uint8_t[::1] decided = decided_
        cdef uint8_t[::1] optout = optout_
        cdef const uint64_t[::1] keys = self._keys
        cdef Py_ssize_t size = keys.shape[0] // 2
        cdef int shift = _table_shift(size)
        with nogil:
            for i in range(n):
                at = _find_key_at(&keys[0], size, shift, numbers[i], scopes[i])
                if at >= 0:
                    decided[i] = (keys[2 * at + 1] >> 8) & 0xFF
                    optout[i] = keys[2 * at + 1] & 0xFF
        return decided_, optout_

    def contains(self, const uint64_t[::1] numbers):
        """One byte per number: 1 where it has a key."""
        out = np.zeros(numbers.shape[0], np.uint8)
        cdef uint8_t[::1] found = out
        cdef const uint64_t[::1] held = self._numbers
        cdef Py_ssize_t i
        with nogil:
            for i in range(numbers.shape[0]):
                found[i] = _has_number(&held[0], held.shape[0], numbers[i])
        return out


cdef inline Py_ssize_t _add_number_at(uint64_t *table, Py_ssize_t size,
                                      uint64_t number) noexcept nogil:
    cdef uint64_t mask = size - 1
    cdef uint64_t i = anning_number_slot(number, _table_shift(size))
    while table[i] != 0:
        if table[i] == number:
            return 0
        i = (i + 1) & mask
    table[i] = number
    return 1


cdef inline Py_ssize_t _add_number(uint64_t[::1] table, uint64_t number) noexcept nogil:
    cdef uint64_t mask = table.shape[0] - 1
    cdef uint64_t i = anning_number_slot(number, _table_shift(table.shape[0]))
    while table[i] != 0:
        if table[i] == number:
            return 0
        i = (i + 1) & mask
    table[i] = number
    return 1


cdef struct OverlayView:
    # A DecisionTable's arrays as the kernel reads them (taken under the GIL, read without).
    const uint64_t *keys
    uint64_t mask        # slots - 1
    int shift            # 64 - log2(slots)
    const uint64_t *filter
    int filter_shift     # 64 - log2(words)
    const uint32_t *extra
    uint64_t extras


cdef enum:
    KEYS_AHEAD = 4  # groups whose events' keys are fetched ahead of their stage 1
    EV_KEYS = 0x80  # the number has keys; bit 2 * level: an event decides the level's bit,
                    # bit 2 * level + 1: and opts out (levels: own scope, entity, global)


cdef inline uint8_t event_levels(const OverlayView *ov, uint64_t number, uint32_t own,
                                 uint32_t entity, int bit) noexcept nogil:
    """What the events of `number` decide of category `bit` at each level (0: it has none).

    A number's keys lie in the run of taken slots from its home slot, which starts a cache
    line (the kernel fetched it stages earlier): the line's four slots are read whole, without
    a branch a slot (which of them hold the number's keys is random; at full size a branch a
    slot measured the same), and the next line only when all four are taken."""
    cdef uint64_t slot = anning_key_slot(number, ov.shift), held, value, match, decided
    cdef uint64_t levels = 0
    cdef const uint64_t *line
    cdef bint full
    cdef int k
    cdef uint32_t scope
    while True:
        line = &ov.keys[2 * slot]
        full = True
        for k in range(4):
            held = line[2 * k]
            value = line[2 * k + 1]
            match = <uint64_t>0 - <uint64_t>(held == number)
            decided = (((value >> (8 + bit)) & 1) | (((value >> bit) & 1) << 1)) & match
            scope = <uint32_t>(value >> 16)
            levels |= (match & EV_KEYS) | (decided & (<uint64_t>0 - <uint64_t>(scope == own))) \
                | ((decided << 2) & (<uint64_t>0 - <uint64_t>(scope == entity))) \
                | ((decided << 4) & (<uint64_t>0 - <uint64_t>(scope == 0)))
            full = full & (held != 0)
        if not full:
            return <uint8_t>levels
        slot = (slot + 4) & ov.mask


cdef inline int events_alone(uint8_t events, uint32_t own, uint32_t entity) noexcept nogil:
    """The answer when the events decide it without the list, else -1: the most specific
    level an event opts out of, when every level above it is decided by an event opting in."""
    cdef int level
    cdef uint32_t scope
    for level in range(3):
        scope = own if level == 0 else entity if level == 1 else 0
        if scope == C_NO_SCOPE:
            continue
        if not (events >> (2 * level)) & 1:
            return -1  # the list's entry of this level decides it
        if (events >> (2 * level + 1)) & 1:
            return SCOPE_SENDER + level
    return SCOPE_NONE


cdef inline uint8_t events_and_list(const IndexView *v, uint8_t events, uint64_t h,
                                    uint32_t own, uint32_t entity, int bit,
                                    uint8_t listed) noexcept nogil:
    """A check whose number has events, decided level by level: an event's decision where
    there is one, the list's entry where there is not. `listed` (the list's answer) is the
    most specific level whose entry has the bit; an entry of a less specific level is looked
    up only when an event set aside a more specific one."""
    cdef int level
    cdef uint32_t scope
    cdef bint entry
    for level in range(3):
        scope = own if level == 0 else entity if level == 1 else 0
        if scope == C_NO_SCOPE:
            continue
        if (events >> (2 * level)) & 1:  # an event decides this level
            if not (events >> (2 * level + 1)) & 1:
                continue
            entry = True
        elif listed == SCOPE_NONE or listed > SCOPE_SENDER + level:
            entry = False
        elif listed == SCOPE_SENDER + level:
            entry = True
        else:  # a more specific level's entry was set aside by an event
            # a scope only events know has no entry (and its id may not fit the words)
            entry = scope <= v.scope_mask and (mask_of(v, h, scope) >> bit) & 1
        if entry:
            return SCOPE_SENDER + level
    return SCOPE_NONE


# -- the kernel with real-time events: check_list's pipeline, the table above consulted in it

cdef struct EventsGroup:
    uint32_t own[GROUP]         # the sender's own scope as events know it
    uint8_t levels[GROUP]       # what they decide at each level (event_levels; 0: none)
    int8_t alone[GROUP]         # the answer they give without the list (-1: they need it)


cdef inline int prepare_with_events(const IndexView *v, const OverlayView *ov, Group *grp,
                                    EventsGroup *evg, const uint32_t *sender_ids,
                                    const uint64_t *numbers, Py_ssize_t base, Py_ssize_t m,
                                    int bit, Py_ssize_t *bad) noexcept nogil:
    """Stage 1 with events: their keys (fetched KEYS_AHEAD groups earlier) are read first, and
    a check they decide alone needs nothing of the list, not even its Bloom block; the others
    are hashed and their Bloom blocks fetched, as `prepare` does."""
    cdef Py_ssize_t j
    cdef uint64_t number
    cdef uint32_t sid
    cdef int status
    grp.base = base
    grp.size = m
    for j in range(m):
        status = take_check(v, grp, j, sender_ids, numbers, bad)
        if status:
            return status
        number = numbers[base + j]
        sid = sender_ids[base + j]
        evg.own[j] = grp.own[j]
        if sid >= v.senders and sid != C_NO_SCOPE:
            evg.own[j] = ov.extra[sid - v.senders]  # a sender only events know
        evg.levels[j] = 0
        if in_filter(ov.filter, ov.filter_shift, number):
            evg.levels[j] = event_levels(ov, number, evg.own[j], grp.entity[j], bit)
        evg.alone[j] = events_alone(evg.levels[j], evg.own[j], grp.entity[j]) \
            if evg.levels[j] else -1
        if evg.alone[j] < 0:
            grp.g[j] = an_bloom_hash(grp.h[j])
            grp.block[j] = v.bloom + \
                an_bloom_block(grp.g[j], v.bloom_blocks) * AN_BLOOM_BLOCK_WORDS
            an_prefetch(grp.block[j])
    return 0


cdef inline void filter_with_events(const IndexView *v, Group *grp, const EventsGroup *evg,
                                    uint8_t *out) noexcept nogil:
    """Stage 2 with events: a check they decide alone answered with them, the others' Bloom
    test; the few that may be present prefetch their directory slot."""
    cdef Py_ssize_t j, count = 0
    for j in range(grp.size):
        grp.cand[count] = <uint16_t>j
        if evg.alone[j] >= 0:
            out[grp.base + j] = <uint8_t>evg.alone[j]
            continue
        out[grp.base + j] = SCOPE_NONE
        count += bloom_may_have(grp.block[j], grp.g[j], grp.own[j], grp.entity[j])
    grp.count = count
    for j in range(count):
        an_prefetch(&v.directory[grp.h[grp.cand[j]] >> v.remainder_bits])


cdef inline void resolve_with_events(const IndexView *v, Group *grp, const EventsGroup *evg,
                                     int bit, uint8_t *out) noexcept nogil:
    """Stage 4 with events: the candidates' list answers, then each check whose events need
    them decided with both."""
    cdef Py_ssize_t j
    resolve_group(v, grp, bit, out)
    for j in range(grp.size):
        if evg.levels[j] and evg.alone[j] < 0:
            out[grp.base + j] = events_and_list(v, evg.levels[j], grp.h[j], evg.own[j],
                                                grp.entity[j], bit, out[grp.base + j])


cdef int check_with_events(const IndexView *v, const OverlayView *ov,
                           const uint32_t *sender_ids, const uint64_t *numbers, Py_ssize_t n,
                           int bit, uint8_t *out, Py_ssize_t *bad) noexcept nogil:
    """`check_list`'s pipeline, with each check whose number has real-time events decided
    with them. The filter of numbers with events (in the caches) sends most numbers of a port's
    traffic past the events; for the rest, their keys' home line is fetched KEYS_AHEAD groups
    before stage 1 and read there (the table is far larger than the caches: read any sooner
    after the fetch, its misses were most of such a check's cost). A check the events decide
    alone is answered at stage 2 without the list, not even its Bloom block; the rest at stage
    4 with the list's entries."""
    cdef Group ring[RING]
    cdef EventsGroup events[RING]
    cdef Py_ssize_t groups = (n + GROUP - 1) // GROUP, t, start, j
    cdef int status
    for t in range(-AHEAD - KEYS_AHEAD, groups + RESOLVE_LAG):
        if 0 <= t + AHEAD + KEYS_AHEAD < groups:
            start = (t + AHEAD + KEYS_AHEAD) * GROUP
            for j in range(start, min(start + GROUP, n)):
                # a number not yet checked for range still hashes to a slot of the table
                if in_filter(ov.filter, ov.filter_shift, numbers[j]):
                    an_prefetch(&ov.keys[2 * anning_key_slot(numbers[j], ov.shift)])
        if 0 <= t + AHEAD < groups:
            start = (t + AHEAD) * GROUP
            status = prepare_with_events(v, ov, &ring[(t + AHEAD) % RING],
                                         &events[(t + AHEAD) % RING], sender_ids, numbers,
                                         start, min(<Py_ssize_t>GROUP, n - start), bit, bad)
            if status:
                return status
        if 0 <= t < groups:
            filter_with_events(v, &ring[t % RING], &events[t % RING], out)
        if 0 <= t - FETCH_LAG < groups:
            fetch_entries(v, &ring[(t - FETCH_LAG) % RING])
        if 0 <= t - RESOLVE_LAG < groups:
            resolve_with_events(v, &ring[(t - RESOLVE_LAG) % RING],
                                &events[(t - RESOLVE_LAG) % RING], bit, out)
    return 0
