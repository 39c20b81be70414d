# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The numbers that have real-time events: an exact set a batch of checks asks in one call.

Open addressing with linear probing over a power-of-two uint64 table (0 marks a free slot: no
E.164 number is 0), at most a quarter full (a check of an absent number mostly meets a
free slot at once, without a mispredicted probe). One writer adds (under the engine's lock) while checks
read without the GIL: a number is stored with one aligned 8-byte write and never removed, so a
reader sees a slot either free or holding its final number; growing fills a new table and only
then publishes it, and a reader keeps the table it started with.
"""

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

import numpy as np

cdef extern from *:
    """
    /* Fibonacci hashing: the top bits of one multiply pick the slot */
    static inline uint64_t anning_slot(uint64_t x, int shift) {
        return (x * 0x9E3779B97F4A7C15ULL) >> shift;
    }
    """
    uint64_t anning_slot(uint64_t x, int shift) nogil


cdef inline int _shift(Py_ssize_t size) noexcept nogil:
    cdef int shift = 64
    while size > 1:
        size >>= 1
        shift -= 1
    return shift


cdef inline bint _insert(uint64_t[::1] table, uint64_t number) noexcept nogil:
    cdef uint64_t mask = table.shape[0] - 1
    cdef uint64_t i = anning_slot(number, _shift(table.shape[0]))
    while table[i] != 0:
        if table[i] == number:
            return False
        i = (i + 1) & mask
    table[i] = number
    return True


cdef class NumberSet:
    """An exact set of E.164 numbers (uint64), growing, never shrinking."""

    cdef object _table          # numpy uint64 array: the published table
    cdef Py_ssize_t _count

    def __cinit__(self, numbers=None):
        self._table = np.zeros(64, np.uint64)
        self._count = 0
        if numbers is not None:
            self.add_many(numbers)

    def __len__(self):
        return self._count

    @property
    def nbytes(self):
        return self._table.nbytes

    def add_many(self, numbers):
        """Add numbers (any integer array-like; 0 is refused: it is no number)."""
        cdef uint64_t one
        cdef uint64_t[::1] published
        if isinstance(numbers, list) and 0 < len(numbers) <= 16:
            # a write's few numbers: no numpy array to build (a quarter of a write's time)
            for value in numbers:
                one = value
                if one == 0:
                    raise ValueError("number: 0 is not a number")
            if (self._count + len(numbers)) * 4 <= self._table.shape[0]:
                published = self._table
                for value in numbers:
                    self._count += _insert(published, value)
                return
        cdef const uint64_t[::1] values = np.ascontiguousarray(numbers, np.uint64).reshape(-1)
        cdef Py_ssize_t n = values.shape[0], i
        if n == 0:
            return
        if np.any(np.asarray(values) == 0):
            raise ValueError("number: 0 is not a number")
        cdef Py_ssize_t size = self._table.shape[0]
        cdef uint64_t[::1] table
        cdef uint64_t[::1] old
        if (self._count + n) * 4 > size:
            while (self._count + n) * 4 > size:
                size *= 2
            grown = np.zeros(size, np.uint64)
            table = grown
            old = self._table
            with nogil:
                for i in range(old.shape[0]):
                    if old[i] != 0:
                        _insert(table, old[i])
            self._table = grown  # published whole: readers hold the old one meanwhile
        table = self._table
        cdef Py_ssize_t added = 0
        with nogil:
            for i in range(n):
                added += _insert(table, values[i])
        self._count += added

    def add(self, number):
        self.add_many(np.array([number], np.uint64))

    def __contains__(self, number):
        return bool(self.contains(np.array([number], np.uint64))[0])

    def contains(self, numbers):
        """One byte per number: 1 where it is in the set."""
        cdef const uint64_t[::1] values = np.ascontiguousarray(numbers, np.uint64).reshape(-1)
        out = np.zeros(values.shape[0], np.uint8)
        cdef uint8_t[::1] found = out
        cdef uint64_t[::1] table = self._table
        cdef uint64_t mask = table.shape[0] - 1, slot, number, held
        cdef const uint64_t* slots = &table[0]
        cdef int shift = _shift(table.shape[0])
        cdef Py_ssize_t i
        if self._count == 0:
            return out
        with nogil:
            for i in range(values.shape[0]):
                number = values[i]
                slot = anning_slot(number, shift)
                held = slots[slot]
                while held != 0 and held != number:
                    slot = (slot + 1) & mask
                    held = slots[slot]
                found[i] = held != 0
        return out

    def to_array(self):
        """The numbers, sorted."""
        table = self._table
        return np.sort(table[table != 0])


cdef extern from *:
    """
    /* CRC-32 (IEEE, as zlib.crc32), table-driven: the write log's records are checked here */
    static uint32_t anning_crc_table[256];
    static int anning_crc_ready = 0;
    static void anning_crc_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            anning_crc_table[i] = c;
        }
        anning_crc_ready = 1;
    }
    static inline uint32_t anning_crc32(const uint8_t *p, size_t n) {
        uint32_t c = 0xFFFFFFFFu;
        while (n--) c = anning_crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
    static inline uint32_t anning_le32(const uint8_t *p) {
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    """
    void anning_crc_init() nogil
    int anning_crc_ready
    uint32_t anning_crc32(const uint8_t *p, size_t n) nogil
    uint32_t anning_le32(const uint8_t *p) nogil


cdef enum:
    _END = 0
    _TORN = 1
    _BAD = 2

FRAME_END, FRAME_TORN, FRAME_BAD = _END, _TORN, _BAD


def scan_frames(const uint8_t[::1] data, Py_ssize_t max_record):
    """Walk `length u32 | crc32 u32 | payload` frames from the start of `data`.

    Returns (payload offsets, payload lengths, where the whole good frames end, why the walk
    stopped: FRAME_END at the end of the data, FRAME_TORN at a frame the data cuts short or
    with an impossible length, FRAME_BAD at a frame whose checksum fails)."""
    cdef Py_ssize_t n = data.shape[0], pos = 0, count = 0, length
    cdef int why = _END
    if not anning_crc_ready:
        anning_crc_init()
    offsets = np.empty(n // 8 + 1, np.int64)
    lengths = np.empty(n // 8 + 1, np.int64)
    cdef int64_t[::1] offs = offsets
    cdef int64_t[::1] lens = lengths
    cdef const uint8_t* base = &data[0] if n else NULL
    with nogil:
        while pos + 8 <= n:
            length = anning_le32(base + pos)
            if length > max_record or pos + 8 + length > n:
                why = _TORN
                break
            if anning_crc32(base + pos + 8, length) != anning_le32(base + pos + 4):
                why = _BAD
                break
            offs[count] = pos + 8
            lens[count] = length
            count += 1
            pos += 8 + length
        if why == _END and pos < n:
            why = _TORN
    return offsets[:count], lengths[:count], pos, why


from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


def join_payloads(const uint8_t[::1] data, const int64_t[::1] offsets,
                  const int64_t[::1] lengths):
    """The payloads of scanned frames back to back (one msgpack stream to decode at once).

    ValueError unless every (offset, length) lies inside data and there are as many offsets as
    lengths: the copy below is unchecked C (found by fuzz/fuzz_frames.py: more lengths than
    offsets, or a negative or too large offset, read memory outside the arrays and data)."""
    cdef Py_ssize_t i, total = 0, at = 0, n = data.shape[0]
    if offsets.shape[0] != lengths.shape[0]:
        raise ValueError(f"join_payloads: {offsets.shape[0]} offsets for "
                         f"{lengths.shape[0]} lengths")
    for i in range(lengths.shape[0]):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > n or lengths[i] > n - offsets[i]:
            raise ValueError(f"join_payloads: frame {i} ({offsets[i]}, {lengths[i]}) is not "
                             f"inside the {n} bytes")
        total += lengths[i]
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dest = PyBytes_AS_STRING(out)
    with nogil:
        for i in range(lengths.shape[0]):
            memcpy(dest + at, &data[offsets[i]], lengths[i])
            at += lengths[i]
    return out


# -- the write log's events made columns --------------------------------------------------------

from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject


from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.tuple cimport PyTuple_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact

_U64_END = 1 << 64
_I64_MIN = -(1 << 63)
_I64_END = 1 << 63


def fields_well_formed(items, frozenset kinds, dict sources):
    """Whether every item is the fields of an event as the log's records hold them: a tuple or
    a list of six - kind (one of `kinds`), number (0 to 2**64 - 1), scope (text), mask (0 to
    255), at (a signed 64-bit integer), source (a key of `sources`) - each of exactly its type
    (no bool for an int). One pass in C; the caller names a bad item, one by one."""
    cdef object item, kind, number, scope, mask, at, source
    for item in items:
        if not (PyTuple_CheckExact(item) or PyList_CheckExact(item)) or len(item) != 6:
            return False
        kind, number, scope, mask, at, source = item
        if not (PyLong_CheckExact(kind) and PyLong_CheckExact(number)
                and PyUnicode_CheckExact(scope) and PyLong_CheckExact(mask)
                and PyLong_CheckExact(at) and PyUnicode_CheckExact(source)):
            return False
        if kind not in kinds or not 0 <= number < _U64_END or not 0 <= mask <= 0xFF \
                or not _I64_MIN <= at < _I64_END or source not in sources:
            return False
    return True


def event_columns(list fields, dict source_ids):
    """Checked fields (tuples kind, number, scope, mask, at_ms, source) as the columns kind,
    number, scope, mask, at, source (numpy arrays) and the scope names: each name's id is the
    order it first appears in (a reassignment's scope left out: 0xFFFFFFFF); a source is its id
    in `source_ids`. OverflowError for a value its column cannot hold, KeyError for an unknown
    source, ValueError for a tuple of other than six fields."""
    cdef Py_ssize_t i, n = len(fields)
    kind_a = np.empty(n, np.uint8)
    number_a = np.empty(n, np.uint64)
    scope_a = np.empty(n, np.uint32)
    mask_a = np.empty(n, np.uint8)
    at_a = np.empty(n, np.int64)
    source_a = np.empty(n, np.uint8)
    cdef uint8_t[::1] kind = kind_a
    cdef uint64_t[::1] number = number_a
    cdef uint32_t[::1] scope = scope_a
    cdef uint8_t[::1] mask = mask_a
    cdef int64_t[::1] at = at_a
    cdef uint8_t[::1] source = source_a
    cdef dict ids = {}
    cdef list names = []
    cdef tuple t
    cdef PyObject *found
    for i in range(n):
        t = fields[i]
        if len(t) != 6:
            raise ValueError(f"fields[{i}]: {len(t)} fields, not 6")
        kind[i] = t[0]
        number[i] = t[1]
        mask[i] = t[3]
        at[i] = t[4]
        found = PyDict_GetItem(source_ids, t[5])
        if found == NULL:
            raise KeyError(t[5])
        source[i] = <object>found
        if kind[i] == _REASSIGN:
            scope[i] = 0xFFFFFFFF
            continue
        found = PyDict_GetItem(ids, t[2])
        if found == NULL:
            scope[i] = len(names)
            PyDict_SetItem(ids, t[2], len(names))
            names.append(t[2])
        else:
            scope[i] = <object>found
    return kind_a, number_a, scope_a, mask_a, at_a, source_a, names


# -- the change feed's formats: CSV rows and protobuf messages, written in one pass ----------

cdef extern from *:
    """
    /* Howard Hinnant's civil_from_days: days since 1970-01-01 -> y, m, d */
    static inline void anning_civil(int64_t z, int64_t *y, int *m, int *d) {
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        *d = (int)(doy - (153 * mp + 2) / 5 + 1);
        *m = (int)(mp < 10 ? mp + 3 : mp - 9);
        *y = yoe + era * 400 + (*m <= 2);
    }
    static inline char *anning_digits(char *o, uint64_t v, int width) {
        char tmp[24];
        int n = 0;
        do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
        while (n < width) tmp[n++] = '0';
        while (n) *o++ = tmp[--n];
        return o;
    }
    /* UTC ISO 8601 with milliseconds: 2026-12-06T10:31:00.123Z (24 bytes for years 0-9999) */
    static inline char *anning_iso(char *o, int64_t ms) {
        int64_t s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
        int64_t frac = ms - s * 1000, days = s >= 0 ? s / 86400 : (s - 86399) / 86400;
        int64_t sod = s - days * 86400, y;
        int m, d;
        anning_civil(days, &y, &m, &d);
        o = anning_digits(o, (uint64_t)y, 4); *o++ = '-';
        o = anning_digits(o, (uint64_t)m, 2); *o++ = '-';
        o = anning_digits(o, (uint64_t)d, 2); *o++ = 'T';
        o = anning_digits(o, (uint64_t)(sod / 3600), 2); *o++ = ':';
        o = anning_digits(o, (uint64_t)(sod / 60 % 60), 2); *o++ = ':';
        o = anning_digits(o, (uint64_t)(sod % 60), 2); *o++ = '.';
        o = anning_digits(o, (uint64_t)frac, 3); *o++ = 'Z';
        return o;
    }
    static inline char *anning_varint(char *o, uint64_t v) {
        while (v >= 0x80) { *o++ = (char)(v | 0x80); v >>= 7; }
        *o++ = (char)v;
        return o;
    }
    static inline int anning_varint_size(uint64_t v) {
        int n = 1;
        while (v >= 0x80) { v >>= 7; n++; }
        return n;
    }
    static inline int anning_digit_count(uint64_t v) {
        int n = 1;
        while (v >= 10) { v /= 10; n++; }
        return n;
    }
    """
    void anning_civil(int64_t z, int64_t *y, int *m, int *d) nogil
    char *anning_digits(char *o, uint64_t v, int width) nogil
    char *anning_iso(char *o, int64_t ms) nogil
    char *anning_varint(char *o, uint64_t v) nogil
    int anning_varint_size(uint64_t v) nogil
    int anning_digit_count(uint64_t v) nogil


cdef enum:
    _REASSIGN = 3
    _ALL = 0xFF


cdef inline Py_ssize_t _rows_of(uint8_t kind, uint8_t mask) noexcept nogil:
    """The CSV rows of one event: one a category, one for `all` or a reassignment."""
    cdef Py_ssize_t rows = 0
    if kind == _REASSIGN or mask == _ALL:
        return 1
    while mask:
        rows += mask & 1
        mask >>= 1
    return rows


cdef inline Py_ssize_t _iso_size(int64_t ms) noexcept nogil:
    """The bytes anning_iso writes for `ms`: 24 for years 0 to 9999 (every event's)."""
    cdef int64_t y, s, days
    cdef int m, d
    if <int64_t>-62167219200000 <= ms < <int64_t>253402300800000:
        return 24
    s = ms // 1000 if ms >= 0 else (ms - 999) // 1000
    days = s // 86400 if s >= 0 else (s - 86399) // 86400
    anning_civil(days, &y, &m, &d)
    return 20 + max(4, anning_digit_count(<uint64_t>y))


cdef const char **_names(list names, Py_ssize_t *sizes) except NULL:
    """The bytes of `names` as C pointers (valid while the list holds them), sizes into
    `sizes`; free() the result."""
    cdef Py_ssize_t j, n = len(names)
    cdef bytes f
    cdef const char **out = <const char **>malloc(max(n, 1) * sizeof(char *))
    if out == NULL:
        raise MemoryError()
    try:
        for j in range(n):
            f = names[j]
            out[j] = PyBytes_AS_STRING(f)
            sizes[j] = len(f)
    except BaseException:
        free(out)
        raise
    return out


def format_csv(const uint64_t[::1] sequence, const uint64_t[::1] number,
               const int64_t[::1] at, const uint32_t[::1] scope, const uint8_t[::1] mask,
               const uint8_t[::1] kind, const uint8_t[::1] source, list scopes,
               list categories, list sources, list actions):
    """The rows `number,sender,category,action,at,source,seq` of events as columns (one row a
    category bit, or `all`; a reassignment's sender `*`, its category empty), as bytes.
    `scopes`, `categories` (8, by bit), `sources` and `actions` (by kind) are the fields'
    bytes, already quoted where a name needs it. Two passes without the GIL: the exact size,
    then the rows into the bytes object returned (no copy)."""
    cdef Py_ssize_t n = sequence.shape[0], i, size = 0, rows, fixed, bad = -1
    cdef Py_ssize_t n_scopes = len(scopes), n_sources = len(sources), n_actions = len(actions)
    cdef int b
    cdef uint8_t m, k
    if len(categories) != 8 or n_sources > 256 or n_actions > 256:
        raise ValueError("categories: 8 names by bit; sources and actions: at most 256")
    cdef Py_ssize_t *scope_n = <Py_ssize_t *>malloc(max(n_scopes, 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t cat_n[8]
    cdef Py_ssize_t src_n[256]
    cdef Py_ssize_t act_n[256]
    cdef const char **scope_p = NULL
    cdef const char **cat_p = NULL
    cdef const char **src_p = NULL
    cdef const char **act_p = NULL
    cdef bytes out
    cdef char *o
    cdef char *start
    if scope_n == NULL:
        raise MemoryError()
    try:
        scope_p = _names(scopes, scope_n)
        cat_p = _names(categories, cat_n)
        src_p = _names(sources, src_n)
        act_p = _names(actions, act_n)
        with nogil:
            for i in range(n):
                k = kind[i]
                if (k != _REASSIGN and scope[i] >= <uint32_t>n_scopes) or \
                        source[i] >= n_sources or k >= n_actions:
                    bad = i
                    break
                rows = _rows_of(k, mask[i])
                # every field of a row but its category, each with its comma or line end
                fixed = anning_digit_count(number[i]) + 1 + act_n[k] + 1 + \
                    _iso_size(at[i]) + 1 + src_n[source[i]] + 1 + \
                    anning_digit_count(sequence[i]) + 1 + 1
                if k == _REASSIGN:
                    size += fixed + 1 + 1
                    continue
                size += rows * (fixed + scope_n[scope[i]] + 1)
                m = mask[i]
                if m == _ALL:
                    size += 3
                else:
                    for b in range(8):
                        if (m >> b) & 1:
                            size += cat_n[b]
        if bad >= 0:
            if kind[bad] != _REASSIGN and scope[bad] >= <uint32_t>n_scopes:
                raise ValueError(f"events[{bad}]: scope {scope[bad]} of {n_scopes}")
            raise ValueError(f"events[{bad}]: source {source[bad]} or kind {kind[bad]} unknown")
        out = PyBytes_FromStringAndSize(NULL, size)
        o = PyBytes_AS_STRING(out)
        start = o
        with nogil:
            for i in range(n):
                k = kind[i]
                m = mask[i] if k != _REASSIGN else 0
                for b in range(9):
                    if k == _REASSIGN or m == _ALL:
                        if b:
                            break
                    elif b == 8 or not (m >> b) & 1:
                        continue
                    o = anning_digits(o, number[i], 1)
                    o[0] = 44
                    o += 1
                    if k == _REASSIGN:
                        o[0] = 42  # *
                        o += 1
                    else:
                        memcpy(o, scope_p[scope[i]], scope_n[scope[i]])
                        o += scope_n[scope[i]]
                    o[0] = 44
                    o += 1
                    if k != _REASSIGN:
                        if m == _ALL:
                            memcpy(o, b"all", 3)
                            o += 3
                        else:
                            memcpy(o, cat_p[b], cat_n[b])
                            o += cat_n[b]
                    o[0] = 44
                    o += 1
                    memcpy(o, act_p[k], act_n[k])
                    o += act_n[k]
                    o[0] = 44
                    o += 1
                    o = anning_iso(o, at[i])
                    o[0] = 44
                    o += 1
                    memcpy(o, src_p[source[i]], src_n[source[i]])
                    o += src_n[source[i]]
                    o[0] = 44
                    o += 1
                    o = anning_digits(o, sequence[i], 1)
                    o[0] = 10
                    o += 1
        if o - start != size:  # the two passes disagree: never hand out such bytes
            raise AssertionError(f"format_csv wrote {o - start} bytes of {size}")
        return out
    finally:
        free(scope_n)
        free(scope_p)
        free(cat_p)
        free(src_p)
        free(act_p)


def encode_changes(const uint64_t[::1] sequence, const uint64_t[::1] number,
                   const int64_t[::1] at, const uint32_t[::1] scope, const uint8_t[::1] mask,
                   const uint8_t[::1] kind, const uint8_t[::1] source, list scopes,
                   list categories, list sources):
    """The bytes of an anning.v1.ChangesResponse holding these events: repeated Change{1:
    sequence, 2: kind, 3: number (E.164 digits), 4: sender, 5: categories, 6: at_ms, 7:
    source}, in one pass; an opt-out or opt-in of every category (mask 0xFF) has the one
    category `all`. `scopes`, `categories` (8, by bit; b"" where no category) and `sources`
    are the strings' UTF-8 bytes."""
    cdef Py_ssize_t n = sequence.shape[0], i, b, body, size = 0
    cdef uint8_t m
    for i in range(n):
        if kind[i] != _REASSIGN and scope[i] >= <uint32_t>len(scopes):
            raise ValueError(f"events[{i}]: scope {scope[i]} of {len(scopes)}")
        if source[i] >= len(sources):
            raise ValueError(f"events[{i}]: source {source[i]} unknown")
    cdef list bodies = [0] * n
    for i in range(n):
        body = 1 + anning_varint_size(sequence[i]) + 2 + 2 + anning_digit_count(number[i])
        if at[i] >= 0:
            body += 1 + anning_varint_size(<uint64_t>at[i])
        else:
            body += 11
        body += 2 + len(<bytes>sources[source[i]])
        if kind[i] != _REASSIGN:
            body += 1 + anning_varint_size(len(<bytes>scopes[scope[i]])) + \
                len(<bytes>scopes[scope[i]])
            m = mask[i]
            if m == _ALL:
                body += 2 + 3  # "all", as a snapshot row and the CSV say it
            else:
                for b in range(8):
                    if (m >> b) & 1 and len(<bytes>categories[b]):
                        body += 2 + len(<bytes>categories[b])
        bodies[i] = body
        size += 1 + anning_varint_size(body) + body
    cdef bytearray out = bytearray(size)
    cdef char *o = out
    cdef bytes f
    for i in range(n):
        o[0] = 0x0A  # field 1, length-delimited: one Change
        o = anning_varint(o + 1, <uint64_t>bodies[i])
        o[0] = 0x08
        o = anning_varint(o + 1, sequence[i])
        o[0] = 0x10
        o[1] = <char>kind[i]
        o[2] = 0x1A
        o[3] = <char>anning_digit_count(number[i])
        o = anning_digits(o + 4, number[i], 1)
        if kind[i] != _REASSIGN:
            f = scopes[scope[i]]
            o[0] = 0x22
            o = anning_varint(o + 1, len(f))
            memcpy(o, <const char *>f, len(f))
            o += len(f)
            m = mask[i]
            if m == _ALL:  # every category: "all", as a snapshot row and the CSV say it
                memcpy(o, b"\x2a\x03all", 5)
                o += 5
            else:
                for b in range(8):
                    f = categories[b]
                    if (m >> b) & 1 and len(f):
                        o[0] = 0x2A
                        o[1] = <char>len(f)
                        memcpy(o + 2, <const char *>f, len(f))
                        o += 2 + len(f)
        o[0] = 0x30
        o = anning_varint(o + 1, <uint64_t>at[i])
        f = sources[source[i]]
        o[0] = 0x3A
        o[1] = <char>len(f)
        memcpy(o + 2, <const char *>f, len(f))
        o += 2 + len(f)
    return bytes(out)

include "events_log.pxi"
