# The write log's version-3 write records decoded to event columns (included by _events.pyx).
#
# A record's payload is msgpack: [3, first_sequence, [[kind, number, scope, mask, at_ms,
# source], ...]] (anning.storage.records owns the format). This pass reads only that shape, with
# exactly the types and ranges records._checked asks of an event, without the GIL; any record
# it does not take it says so, and the caller decodes that one in Python (a seal, a header, a
# record of an earlier version - and corruption, which Python then names).

from strtab cimport an_strtab, an_strtab_free, an_strtab_get, an_strtab_init, an_strtab_put


cdef struct Cursor:
    const uint8_t *p
    const uint8_t *end


cdef inline bint _need(Cursor *c, Py_ssize_t n) noexcept nogil:
    return c.end - c.p >= n


cdef inline uint64_t _be(const uint8_t *p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef inline bint _integer(Cursor *c, bint *negative, uint64_t *value) noexcept nogil:
    """A msgpack integer of any width: its sign and its 64 bits (two's complement when
    negative)."""
    cdef uint8_t b
    cdef int width
    if not _need(c, 1):
        return False
    b = c.p[0]
    if b <= 0x7f or b >= 0xe0:  # positive / negative fixint
        negative[0] = b >= 0xe0
        value[0] = <uint64_t><int64_t><signed char>b if b >= 0xe0 else b
        c.p += 1
        return True
    if 0xcc <= b <= 0xcf:  # uint8 .. uint64
        width = 1 << (b - 0xcc)
        if not _need(c, 1 + width):
            return False
        value[0] = _be(c.p + 1, width)
        negative[0] = False
        c.p += 1 + width
        return True
    if 0xd0 <= b <= 0xd3:  # int8 .. int64
        width = 1 << (b - 0xd0)
        if not _need(c, 1 + width):
            return False
        value[0] = _be(c.p + 1, width)
        if width < 8 and value[0] >> (8 * width - 1):  # sign-extend
            value[0] |= ~((<uint64_t>1 << (8 * width)) - 1)
        negative[0] = <int64_t>value[0] < 0
        c.p += 1 + width
        return True
    return False


cdef inline bint _unsigned(Cursor *c, uint64_t *value) noexcept nogil:
    cdef bint negative = False
    return _integer(c, &negative, value) and not negative


cdef inline bint _array(Cursor *c, uint64_t *count) noexcept nogil:
    cdef uint8_t b
    if not _need(c, 1):
        return False
    b = c.p[0]
    if 0x90 <= b <= 0x9f:
        count[0] = b & 0x0f
        c.p += 1
        return True
    if b == 0xdc or b == 0xdd:
        if not _need(c, 1 + (2 if b == 0xdc else 4)):
            return False
        count[0] = _be(c.p + 1, 2 if b == 0xdc else 4)
        c.p += 3 if b == 0xdc else 5
        return True
    return False


cdef inline bint _text(Cursor *c, const uint8_t **s, uint64_t *n) noexcept nogil:
    """A msgpack str (not bin): its bytes."""
    cdef uint8_t b
    cdef int width
    if not _need(c, 1):
        return False
    b = c.p[0]
    if 0xa0 <= b <= 0xbf:
        n[0] = b & 0x1f
        c.p += 1
    elif 0xd9 <= b <= 0xdb:
        width = 1 << (b - 0xd9)
        if not _need(c, 1 + width):
            return False
        n[0] = _be(c.p + 1, width)
        c.p += 1 + width
    else:
        return False
    if not _need(c, <Py_ssize_t>n[0]):
        return False
    s[0] = c.p
    c.p += n[0]
    return True


cdef struct EventOut:
    uint8_t *kind
    uint64_t *number
    uint32_t *scope
    uint8_t *mask
    int64_t *at
    uint8_t *source


cdef Py_ssize_t _write_size(const uint8_t *payload, Py_ssize_t length) noexcept nogil:
    """The events a payload says it holds if it starts as a version-3 write, else 0."""
    cdef Cursor c
    cdef uint64_t count, version, first
    c.p = payload
    c.end = payload + length
    if not _array(&c, &count) or count != 3 or not _unsigned(&c, &version) or version != 3 \
            or not _unsigned(&c, &first) or not _array(&c, &count):
        return 0
    # an event takes six bytes at least: a count past that is corruption
    return <Py_ssize_t>count if count <= <uint64_t>(c.end - c.p) // 6 else 0


cdef Py_ssize_t _write_record(const uint8_t *base, Py_ssize_t offset, Py_ssize_t length,
                              an_strtab *scopes, an_strtab *sources, uint64_t *first,
                              EventOut *out, Py_ssize_t at, Py_ssize_t room,
                              int64_t *name_spans, Py_ssize_t *names) noexcept nogil:
    """Decode the payload at base + offset as a version-3 write into the columns from row
    `at`: its event count, or -1 when it is not one this pass takes (or needs more rows than
    `room`). A scope seen for the first time gets the next id, its bytes' span (in base) kept
    in name_spans."""
    cdef const uint8_t *payload = base + offset
    cdef Cursor c
    cdef uint64_t count, fields, version, kind, number, mask, v
    cdef bint negative
    cdef const uint8_t *s
    cdef uint64_t n
    cdef int64_t value
    cdef Py_ssize_t i
    c.p = payload
    c.end = payload + length
    if not _array(&c, &count) or count != 3:
        return -1
    if not _unsigned(&c, &version) or version != 3:
        return -1
    if not _unsigned(&c, first) or first[0] == 0:
        return -1
    if not _array(&c, &count) or count == 0 or count > <uint64_t>(c.end - c.p):
        return -1
    if <Py_ssize_t>count > room - at:
        return -1
    for i in range(<Py_ssize_t>count):
        if not _array(&c, &fields) or fields != 6:
            return -1
        if not _unsigned(&c, &kind) or kind < 1 or kind > 3:
            return -1
        if not _unsigned(&c, &number):
            return -1
        if not _text(&c, &s, &n):  # the scope
            return -1
        if kind == _REASSIGN:
            out.scope[at + i] = 0xFFFFFFFF
        elif an_strtab_get(scopes, s, n, &value):
            out.scope[at + i] = <uint32_t>value
        else:
            if an_strtab_put(scopes, s, n, names[0]) < 0:
                return -1  # no memory: Python's decoding says so
            name_spans[2 * names[0]] = s - base
            name_spans[2 * names[0] + 1] = <int64_t>n
            out.scope[at + i] = <uint32_t>names[0]
            names[0] += 1
        if not _unsigned(&c, &mask) or mask > 0xFF:
            return -1
        if not _integer(&c, &negative, &v) or (not negative and v >> 63):
            return -1
        if not _text(&c, &s, &n) or not an_strtab_get(sources, s, n, &value):
            return -1
        out.kind[at + i] = <uint8_t>kind
        out.number[at + i] = number
        out.mask[at + i] = <uint8_t>mask
        out.at[at + i] = <int64_t>v
        out.source[at + i] = <uint8_t>value
    if c.p != c.end:  # one value, exactly
        return -1
    return <Py_ssize_t>count


def decode_writes(const uint8_t[::1] data, const int64_t[::1] offsets,
                  const int64_t[::1] lengths, dict source_ids):
    """The records whose payloads are data[offsets[i]:offsets[i] + lengths[i]], decoded where
    they are version-3 writes of well-formed events, in one pass without the GIL.

    Returns (first, count, kind, number, scope, mask, at, source, names): per record its first
    sequence and event count (first 0: a record this pass did not take, for the caller to
    decode), the events of the records taken as columns in order (a scope is its id in
    `names`, a reassignment's 0xFFFFFFFF, a source its id in `source_ids`); or None when a
    scope's bytes are not UTF-8 (the caller's decoding names the record)."""
    cdef Py_ssize_t records = offsets.shape[0], i, taken, rows = 0, room = 0, names = 0
    if lengths.shape[0] != records:
        raise ValueError(f"lengths: {lengths.shape[0]} for {records} offsets")
    for i in range(records):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] + lengths[i] > data.shape[0]:
            raise ValueError(f"record {i}: {lengths[i]} bytes at {offsets[i]} are outside the "
                             f"data ({data.shape[0]} bytes)")
    first_a = np.zeros(records, np.uint64)
    count_a = np.zeros(records, np.int64)
    cdef uint64_t[::1] first = first_a
    cdef int64_t[::1] count = count_a
    with nogil:
        for i in range(records):
            room += _write_size(&data[offsets[i]], lengths[i]) if lengths[i] else 0
    # one row more than needed: no column is empty, so each has a first element to point at
    kind_a = np.empty(room + 1, np.uint8)
    number_a = np.empty(room + 1, np.uint64)
    scope_a = np.empty(room + 1, np.uint32)
    mask_a = np.empty(room + 1, np.uint8)
    at_a = np.empty(room + 1, np.int64)
    source_a = np.empty(room + 1, np.uint8)
    spans_a = np.empty(2 * room + 2, np.int64)
    cdef uint8_t[::1] kind_v = kind_a, mask_v = mask_a, source_v = source_a
    cdef uint64_t[::1] number_v = number_a
    cdef uint32_t[::1] scope_v = scope_a
    cdef int64_t[::1] at_v = at_a, spans = spans_a
    cdef EventOut out
    out.kind, out.number, out.scope = &kind_v[0], &number_v[0], &scope_v[0]
    out.mask, out.at, out.source = &mask_v[0], &at_v[0], &source_v[0]
    cdef an_strtab scopes, sources
    if an_strtab_init(&scopes, 64) < 0 or an_strtab_init(&sources, 16) < 0:
        raise MemoryError()
    cdef int64_t *span_of = &spans[0]
    cdef const uint8_t *base = &data[0] if data.shape[0] else NULL
    cdef bytes name
    try:
        for text, code in source_ids.items():
            name = text.encode()
            if an_strtab_put(&sources, name, len(name), code) < 0:
                raise MemoryError()
        with nogil:
            for i in range(records):
                taken = _write_record(base, offsets[i], lengths[i], &scopes, &sources,
                                      &first[i], &out, rows, room, span_of, &names)
                if taken < 0:
                    first[i] = 0
                    continue
                count[i] = taken
                rows += taken
        scope_names = []
        for i in range(names):
            try:
                scope_names.append(
                    bytes(data[spans[2 * i]:spans[2 * i] + spans[2 * i + 1]]).decode())
            except UnicodeDecodeError:
                return None
    finally:
        an_strtab_free(&scopes)
        an_strtab_free(&sources)
    return (first_a, count_a, kind_a[:rows], number_a[:rows], scope_a[:rows], mask_a[:rows],
            at_a[:rows], source_a[:rows], scope_names)
