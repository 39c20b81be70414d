# Real-time events in the compiled check (included by _index.pyx).
#
# The engine resolves every event against the snapshot when it takes it (latest statement per
# (number, scope, category) wins, reassignments drop what is older) and keeps the outcome here:
# per (number, scope id) which category bits the events decide (`decided`) and, of those, which
# are opted out (`optout`). A check whose number has such keys is decided level by level in the
# same GIL-free pass as the rest of its batch: where a key decides the bit, its answer; where
# not, the snapshot's entry.
#
# One writer (the engine, under its lock) and many readers without the GIL: a slot is two
# aligned 64-bit words, the key's number (0: free) and (scope << 16 | decided << 8 | optout).
# A key's home slot is its number's (open addressing, linear probing): the keys of a number
# lie next to each other, so a check finds all the scopes it asks about in one cache line. A
# new slot's second word is stored before its first; an update stores the second word only; a
# slot is never freed. Growing fills a new table and only then publishes it; a reader keeps the
# table it started with.

cdef extern from *:
    """
    static inline uint64_t anning_key_slot(uint64_t number, int shift) {
        return (number * 0xD6E8FEB86659FD93ULL) >> shift;
    }
    static inline uint64_t anning_number_slot(uint64_t number, int shift) {
        return (number * 0x9E3779B97F4A7C15ULL) >> shift;
    }
    #define anning_store_barrier() __atomic_signal_fence(__ATOMIC_RELEASE)
    """
    uint64_t anning_key_slot(uint64_t number, int shift) nogil
    uint64_t anning_number_slot(uint64_t number, int shift) nogil
    void anning_store_barrier() nogil


cdef enum:
    OV_AHEAD = 16       # checks whose keys' home slot is fetched ahead of their use
    OV_CHUNK = 4096     # rows set between two looks at the table's size


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
    anning_store_barrier()
    v.keys[2 * at] = number
    v.added_keys += 1
    v.added_numbers += _add_number_at(v.held, v.held_size, number)


cdef class DecisionTable:
    """(number, scope id) -> which category bits events decide, and which of those opt out."""

    cdef object _keys       # uint64[2 * size]: (number, scope << 16 | decided << 8 | optout)
    cdef object _numbers    # uint64[size2]: the numbers that have keys
    cdef readonly Py_ssize_t keys, numbers

    def __cinit__(self):
        self._keys = np.zeros(2 * 64, np.uint64)
        self._numbers = np.zeros(64, np.uint64)
        self.keys = 0
        self.numbers = 0

    def __len__(self):
        return self.keys

    @property
    def nbytes(self):
        return self._keys.nbytes + self._numbers.nbytes

    cdef int _reserve(self, Py_ssize_t more) except -1:
        """Grow (at most half full) before `more` keys come: fill a new table, then publish."""
        cdef Py_ssize_t size = self._keys.shape[0] // 2, grown = size, i
        cdef uint64_t[::1] old
        cdef uint64_t[::1] table
        cdef Py_ssize_t at
        while (self.keys + more) * 2 > grown:
            grown *= 2
        if grown != size:
            new_keys = np.zeros(2 * grown, np.uint64)
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
            new_numbers = np.zeros(grown, np.uint64)
            table = new_numbers
            old = self._numbers
            with nogil:
                for i in range(size):
                    if old[i] != 0:
                        _add_number(table, old[i])
            self._numbers = new_numbers
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
        view.keys = &keys[0]
        view.size = keys.shape[0] // 2
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


cdef inline void _levels(const IndexView *v, uint32_t sid, const uint32_t *extra,
                         Py_ssize_t extras, uint32_t *levels) noexcept nogil:
    """The scope ids a check of sender id `sid` asks about: its own, its entity's, global."""
    levels[0] = C_NO_SCOPE
    levels[1] = C_NO_SCOPE
    if sid < v.senders:
        levels[0] = v.sender_scope[sid]
        levels[1] = v.sender_entity[sid]
    elif sid != C_NO_SCOPE and sid - v.senders < <uint64_t>extras:
        levels[0] = extra[sid - v.senders]  # a sender only events know
    levels[2] = 0


cdef void overlay_pass(const IndexView *v, const uint64_t *keys, Py_ssize_t size,
                       const uint32_t *sender_ids, const uint64_t *numbers, Py_ssize_t n,
                       int bit, const uint32_t *extra, Py_ssize_t extras,
                       uint8_t *out) noexcept nogil:
    """Redo the checks whose numbers have events (`out` holds the list's answers): level by
    level, an event's decision where there is one, the list's entry where there is not.

    A number's keys lie in one run of slots from its home slot (one cache line, mostly), read
    once for the three levels; the home slot is fetched OV_AHEAD checks ahead, so that the
    misses of several checks are in flight at once (the table is far larger than the caches:
    one check after another waited for each miss in turn). The list's answer says whether an
    entry of a level has the bit, unless an event set aside a more specific level: only then
    is the entry looked up."""
    cdef Py_ssize_t i
    cdef uint64_t mask = size - 1, slot, held, number, value
    cdef uint64_t found[3]
    cdef uint32_t levels[3]
    cdef uint32_t scope
    cdef int level, listed, shift = _table_shift(size)
    cdef bint entry, any_key
    for i in range(min(<Py_ssize_t>OV_AHEAD, n)):
        an_prefetch(&keys[2 * anning_key_slot(numbers[i], shift)])
    for i in range(n):
        if i + OV_AHEAD < n:
            an_prefetch(&keys[2 * anning_key_slot(numbers[i + OV_AHEAD], shift)])
        number = numbers[i]
        _levels(v, sender_ids[i], extra, extras, levels)
        found[0] = 0
        found[1] = 0
        found[2] = 0
        any_key = False
        slot = anning_key_slot(number, shift)
        held = keys[2 * slot]
        while held != 0:
            if held == number:
                any_key = True
                value = keys[2 * slot + 1]
                scope = <uint32_t>(value >> 16)
                for level in range(3):
                    if scope == levels[level]:
                        found[level] = value
            slot = (slot + 1) & mask
            held = keys[2 * slot]
        if not any_key:
            continue
        listed = out[i]  # the most specific level whose entry has the bit (0: none)
        out[i] = SCOPE_NONE
        for level in range(3):
            if levels[level] == C_NO_SCOPE:
                continue
            value = found[level]
            if (value >> (8 + bit)) & 1:  # an event decides this level
                if not ((value >> bit) & 1):
                    continue
                entry = True
            elif listed == SCOPE_NONE or listed > SCOPE_SENDER + level:
                entry = False
            elif listed == SCOPE_SENDER + level:
                entry = True
            else:  # a more specific level's entry was set aside by an event
                # a scope only events know has no entry (and its id may not fit the words)
                entry = levels[level] <= v.scope_mask and \
                    (mask_of(v, an_perm50(number), levels[level]) >> bit) & 1
            if entry:
                out[i] = SCOPE_SENDER + level
                break
