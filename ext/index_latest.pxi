# The latest event per (number, scope id, category bit) (included by _index.pyx).
#
# What the overlay resolves a write against: for each key the event that decides it among all
# those taken (latest time; at a tie the opt-out; at a full tie the later sequence), and per
# number its latest reassignment (scope REASSIGN_SCOPE, bit 0). A batch of events is offered in
# one call and the keys it changed come back as flags, so a write of a thousand events is
# resolved in a few vectorised passes, not a thousand Python ones (a dict of Event objects per
# key cost ~7 us an event and a few hundred bytes).
#
# A slot is four words: number (0: free), scope << 32 | bit << 16 | kind << 8 | source, time,
# sequence. A key's home slot is its number's (linear probing), so every key of a number lies in
# the run from that home slot to the next free one (keys_of scans it). Slots are never freed.
# One writer; readers hold the GIL while they read (explain), and so does the writer while it
# writes a table others can see (`shared`): a reader never meets a slot half written.

cdef enum:
    _LT_WORDS = 4
    _LT_OPT_OUT = 1
    _LT_CHUNK = 4096    # rows offered between two looks at the table's size

cdef uint32_t _LT_REASSIGN = 0xFFFFFFFF


cdef inline uint64_t _lt_meta(uint32_t scope, uint8_t bit, uint8_t kind,
                              uint8_t source) noexcept nogil:
    return (<uint64_t>scope << 32) | (<uint64_t>bit << 16) | (<uint64_t>kind << 8) | source


cdef inline Py_ssize_t _lt_find(const uint64_t *slots, uint64_t mask, int shift,
                                uint64_t number, uint64_t key) noexcept nogil:
    """The slot of (number, key = scope << 16 | bit), or the free slot where it goes (-1 - i)."""
    cdef uint64_t i = anning_number_slot(number, shift)
    cdef uint64_t held
    while True:
        held = slots[_LT_WORDS * i]
        if held == 0:
            return -1 - <Py_ssize_t>i
        if held == number and (slots[_LT_WORDS * i + 1] >> 16) == key:
            return <Py_ssize_t>i
        i = (i + 1) & mask


cdef inline bint _lt_wins(int64_t at, uint8_t kind, uint64_t sequence,
                          const uint64_t *held) noexcept nogil:
    """(at, opt-out, sequence) >= the held event's: the offered event decides the key."""
    cdef int64_t held_at = <int64_t>held[2]
    cdef int out = kind == _LT_OPT_OUT
    cdef int held_out = ((held[1] >> 8) & 0xFF) == _LT_OPT_OUT
    if at != held_at:
        return at > held_at
    if out != held_out:
        return out > held_out
    return sequence >= held[3]


cdef class LatestTable:
    """(number, scope id, bit) -> the latest event's (time, kind, source, sequence)."""

    cdef object _slots          # uint64[4 * size]
    cdef readonly Py_ssize_t keys

    def __cinit__(self):
        self._slots = np.zeros(_LT_WORDS * 64, np.uint64)
        self.keys = 0

    def __len__(self):
        return self.keys

    @property
    def nbytes(self):
        return self._slots.nbytes

    cdef int _reserve(self, Py_ssize_t more) except -1:
        """Grow (at most half full) before `more` keys come: fill a new table, then publish."""
        cdef Py_ssize_t size = self._slots.shape[0] // _LT_WORDS, grown = size, i, at
        while (self.keys + more) * 2 > grown:
            grown *= 2
        if grown == size:
            return 0
        fresh = np.zeros(_LT_WORDS * grown, np.uint64)
        cdef uint64_t[::1] table = fresh
        cdef uint64_t[::1] old = self._slots
        cdef int shift = _table_shift(grown)
        cdef uint64_t mask = grown - 1
        with nogil:
            for i in range(size):
                if old[_LT_WORDS * i] != 0:
                    at = -1 - _lt_find(&table[0], mask, shift, old[_LT_WORDS * i],
                                       old[_LT_WORDS * i + 1] >> 16)
                    table[_LT_WORDS * at + 1] = old[_LT_WORDS * i + 1]
                    table[_LT_WORDS * at + 2] = old[_LT_WORDS * i + 2]
                    table[_LT_WORDS * at + 3] = old[_LT_WORDS * i + 3]
                    table[_LT_WORDS * at] = old[_LT_WORDS * i]
        self._slots = fresh  # published whole
        return 0

    def offer_many(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes,
                   const uint8_t[::1] bits, const int64_t[::1] ats, const uint8_t[::1] kinds,
                   const uint8_t[::1] sources, const uint64_t[::1] sequences,
                   bint shared=True):
        """Offer events, one key each, in order; one byte per row: 1 where the row became its
        key's latest (a later row of the same key may have taken over since). `shared`: others
        may read this table meanwhile, so the GIL is kept; a table still being built (not
        shared) is filled without it."""
        cdef Py_ssize_t n = numbers.shape[0], i, at
        if (scopes.shape[0] != n or bits.shape[0] != n or ats.shape[0] != n
                or kinds.shape[0] != n or sources.shape[0] != n or sequences.shape[0] != n):
            raise ValueError("the columns differ in length")
        for i in range(n):
            if numbers[i] == 0:
                raise ValueError(f"numbers[{i}]: 0 is not a number")
            if bits[i] > 7:
                raise ValueError(f"bits[{i}]: {bits[i]} is not a category bit (0-7)")
        won = np.zeros(n, np.uint8)
        cdef uint8_t[::1] w = won
        cdef uint64_t[::1] slots
        cdef Py_ssize_t size, added = 0, start = 0, stop
        cdef uint64_t mask
        cdef int shift
        while start < n:
            # grown a chunk at a time: one reserve for every row at once left a table filled
            # from many repeats of few keys mostly empty
            stop = min(start + _LT_CHUNK, n)
            self._reserve(stop - start)
            slots = self._slots
            size = slots.shape[0] // _LT_WORDS
            mask = size - 1
            shift = _table_shift(size)
            if shared:
                added = _lt_offer(&slots[0], mask, shift, numbers, scopes, bits, ats, kinds,
                                  sources, sequences, w, start, stop)
            else:
                with nogil:
                    added = _lt_offer(&slots[0], mask, shift, numbers, scopes, bits, ats,
                                      kinds, sources, sequences, w, start, stop)
            self.keys += added
            start = stop
        return won

    def get_many(self, const uint64_t[::1] numbers, const uint32_t[::1] scopes,
                 const uint8_t[::1] bits):
        """(found, at, kind, source, sequence) of each key's latest event (zeros where none)."""
        cdef Py_ssize_t n = numbers.shape[0], i, at
        if scopes.shape[0] != n or bits.shape[0] != n:
            raise ValueError("numbers, scopes and bits differ in length")
        found_, at_ = np.zeros(n, np.uint8), np.zeros(n, np.int64)
        kind_, source_ = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        sequence_ = np.zeros(n, np.uint64)
        cdef uint8_t[::1] found = found_
        cdef int64_t[::1] ats = at_
        cdef uint8_t[::1] kinds = kind_
        cdef uint8_t[::1] sources = source_
        cdef uint64_t[::1] sequences = sequence_
        cdef const uint64_t[::1] slots = self._slots
        cdef Py_ssize_t size = slots.shape[0] // _LT_WORDS
        cdef uint64_t mask = size - 1
        cdef int shift = _table_shift(size)
        for i in range(n):
            at = _lt_find(&slots[0], mask, shift, numbers[i],
                          (<uint64_t>scopes[i] << 16) | bits[i])
            if at < 0:
                continue
            found[i] = 1
            ats[i] = <int64_t>slots[_LT_WORDS * at + 2]
            kinds[i] = (slots[_LT_WORDS * at + 1] >> 8) & 0xFF
            sources[i] = slots[_LT_WORDS * at + 1] & 0xFF
            sequences[i] = slots[_LT_WORDS * at + 3]
        return found_, at_, kind_, source_, sequence_

    def reassigned_many(self, const uint64_t[::1] numbers):
        """(found, at) of each number's latest reassignment event (zeros where none)."""
        cdef Py_ssize_t n = numbers.shape[0], i, at
        found_, at_ = np.zeros(n, np.uint8), np.zeros(n, np.int64)
        cdef uint8_t[::1] found = found_
        cdef int64_t[::1] ats = at_
        cdef const uint64_t[::1] slots = self._slots
        cdef Py_ssize_t size = slots.shape[0] // _LT_WORDS
        cdef uint64_t mask = size - 1
        cdef int shift = _table_shift(size)
        cdef uint64_t key = <uint64_t>_LT_REASSIGN << 16
        for i in range(n):
            at = _lt_find(&slots[0], mask, shift, numbers[i], key)
            if at >= 0:
                found[i] = 1
                ats[i] = <int64_t>slots[_LT_WORDS * at + 2]
        return found_, at_

    def keys_of(self, uint64_t number):
        """(scope ids, bits) of every key of the number, its reassignment's aside."""
        cdef const uint64_t[::1] slots = self._slots
        cdef Py_ssize_t size = slots.shape[0] // _LT_WORDS
        cdef uint64_t mask = size - 1
        cdef uint64_t i = anning_number_slot(number, _table_shift(size))
        scopes, bits = [], []
        while slots[_LT_WORDS * i] != 0:
            if slots[_LT_WORDS * i] == number and \
                    <uint32_t>(slots[_LT_WORDS * i + 1] >> 32) != _LT_REASSIGN:
                scopes.append(<uint32_t>(slots[_LT_WORDS * i + 1] >> 32))
                bits.append((slots[_LT_WORDS * i + 1] >> 16) & 0xFF)
            i = (i + 1) & mask
        return np.array(scopes, np.uint32), np.array(bits, np.uint8)


cdef Py_ssize_t _lt_offer(uint64_t *slots, uint64_t mask, int shift,
                          const uint64_t[::1] numbers, const uint32_t[::1] scopes,
                          const uint8_t[::1] bits, const int64_t[::1] ats,
                          const uint8_t[::1] kinds, const uint8_t[::1] sources,
                          const uint64_t[::1] sequences, uint8_t[::1] won,
                          Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t i, at, added = 0
    cdef uint64_t *slot
    for i in range(start, stop):
        at = _lt_find(slots, mask, shift, numbers[i], (<uint64_t>scopes[i] << 16) | bits[i])
        if at >= 0:
            slot = slots + _LT_WORDS * at
            if not _lt_wins(ats[i], kinds[i], sequences[i], slot):
                continue
        else:
            slot = slots + _LT_WORDS * (-1 - at)
            added += 1
        slot[1] = _lt_meta(scopes[i], bits[i], kinds[i], sources[i])
        slot[2] = <uint64_t>ats[i]
        slot[3] = sequences[i]
        slot[0] = numbers[i]
        won[i] = 1
    return added


cdef inline int64_t _listed_moved_at(const uint64_t[::1] numbers, const int64_t[::1] ats,
                                     uint64_t number) noexcept nogil:
    """When the list saw the number reassigned (its sorted reassignments), 0: never."""
    cdef Py_ssize_t lo = 0, hi = numbers.shape[0], mid
    while lo < hi:
        mid = (lo + hi) // 2
        if numbers[mid] <= number:
            lo = mid + 1
        else:
            hi = mid
    return ats[lo - 1] if lo > 0 and numbers[lo - 1] == number else 0


def take_events(LatestTable latest, DecisionTable decisions, list events,
                const uint32_t[::1] scopes, dict sources, int64_t newest_ms,
                uint32_t listed_scopes, const uint64_t[::1] listed_moved,
                const int64_t[::1] listed_moved_at):
    """A write's events (Event objects with their sequences; `scopes`: each one's scope id,
    REASSIGN's for a reassignment) offered to `latest`, and every key-bit where one became the
    latest decided in the same pass where the event decides it outright: later than anything
    the list says (`newest_ms`) or of a scope the list does not know (ids from
    `listed_scopes` on), and not older than the number's reassignments (the events' and the
    list's, `listed_moved`/`listed_moved_at` sorted by number). Returns what needs the list's
    statements or a reassignment's sweep, for the caller: (numbers, scope ids, bits) of those
    key-bits, and the numbers a reassignment event newly moved. The GIL is held throughout:
    readers of both tables (explain) never meet a slot half written."""
    cdef Py_ssize_t n = len(events), i, at
    if scopes.shape[0] != n:
        raise ValueError("events and scopes differ in length")
    if listed_moved.shape[0] != listed_moved_at.shape[0]:
        raise ValueError("listed_moved and listed_moved_at differ in length")
    cdef object e
    cdef uint64_t number, sequence
    cdef int64_t when, cut, moved_at
    cdef uint8_t kind, mask, source, bit
    cdef uint32_t scope
    cdef uint64_t *slot
    cdef uint64_t[::1] slots
    cdef Py_ssize_t size
    cdef uint64_t table_mask
    cdef int shift
    cdef DecisionView view
    for i in range(n):  # all or none: nothing is taken when one cannot be
        e = events[i]
        number = e.number
        if number == 0 or number >= AN_NUMBER_LIMIT:
            raise ValueError(f"events[{i}].number: {number} is not an E.164 number")
        if e.source not in sources:
            raise ValueError(f"events[{i}].source: {e.source!r} is not a source")
    slow_numbers, slow_scopes, slow_bits, moved = [], [], [], []
    for i in range(n):
        e = events[i]
        number, kind, mask, when, sequence = e.number, e.kind, e.mask, e.at_ms, e.sequence
        source = sources[e.source]
        scope = _LT_REASSIGN if kind == 3 else scopes[i]
        latest._reserve(8)
        decisions._reserve(8)
        slots = latest._slots
        size = slots.shape[0] // _LT_WORDS
        table_mask = size - 1
        shift = _table_shift(size)
        view = decisions._view()
        if kind == 3:
            mask = 1  # a reassignment is one row, bit 0
        for bit in range(8):
            if not (mask >> bit) & 1:
                continue
            at = _lt_find(&slots[0], table_mask, shift, number, (<uint64_t>scope << 16) | bit)
            if at >= 0:
                slot = &slots[0] + _LT_WORDS * at
                if not _lt_wins(when, kind, sequence, slot):
                    continue
            else:
                slot = &slots[0] + _LT_WORDS * (-1 - at)
                latest.keys += 1
            slot[1] = _lt_meta(scope, bit, kind, source)
            slot[2] = <uint64_t>when
            slot[3] = sequence
            slot[0] = number
            if kind == 3:
                moved.append(number)
                continue
            # decided here where the event decides outright, else left to the caller
            at = _lt_find(&slots[0], table_mask, shift, number, <uint64_t>_LT_REASSIGN << 16)
            moved_at = <int64_t>slots[_LT_WORDS * at + 2] if at >= 0 else 0
            cut = max(moved_at, _listed_moved_at(listed_moved, listed_moved_at, number))
            if when >= cut and (when > newest_ms or scope >= listed_scopes):
                _set_bit(&view, number, scope, bit, True, kind == _LT_OPT_OUT)
            elif when < cut and at < 0:
                _set_bit(&view, number, scope, bit, False, False)  # older than the list's move
            else:
                slow_numbers.append(number)
                slow_scopes.append(scope)
                slow_bits.append(bit)
        decisions.keys += view.added_keys
        decisions.numbers += view.added_numbers
    return (np.array(slow_numbers, np.uint64), np.array(slow_scopes, np.uint32),
            np.array(slow_bits, np.uint8), np.array(moved, np.uint64))
