# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The messages a NATS connection delivers to one subscription, and the events they carry, read
from the bytes in one pass each.

A replica reads every event of the stream, a restart's backlog all at once; read in Python a
message cost some microseconds (its protocol line split, its metadata parsed, its payload
unpacked), here tens of nanoseconds. Nothing here knows sockets: the caller hands over the bytes
it read and gets columns back.

`scan_messages`: the run of MSG/HMSG operations of one subscription from a position (NATS
protocol: `HMSG <subject> <sid> [reply] <header bytes> <total bytes>`, then the header block
and the payload, CRLF), stopping at another operation or at a message not yet whole. Each row:
its kind (DATA: a JetStream delivery, its metadata read from the reply subject
`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>` or the
form with a domain and an account hash; CONTROL: a status message, `NATS/1.0 1xx`; OTHER), the
sequences, and where its reply, headers and payload lie.

`decode_events`: the fixed fields of event payloads (anning.storage.nats.messages owns the
format) and where each scope lies; the first row that does not add up is named, not guessed.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy

import numpy as np

DATA = K_DATA
CONTROL = K_CONTROL
OTHER = K_OTHER

cdef enum:
    K_DATA = 0
    K_CONTROL = 1
    K_OTHER = 2
    MAX_TOKENS = 8
    MAX_REPLY_TOKENS = 16
    FIXED = 22  # version, kind, mask, source u8; number u64; at i64; scope length u16


cdef inline bint _number(const unsigned char* p, Py_ssize_t n, uint64_t* out) noexcept nogil:
    """A decimal of 1 to 19 digits."""
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    if n <= 0 or n > 19:
        return False
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return False
        v = v * 10 + (p[i] - 48)
    out[0] = v
    return True


cdef inline bint _metadata(const unsigned char* p, Py_ssize_t n, uint64_t* sseq,
                           uint64_t* cseq, uint64_t* pending) noexcept nogil:
    """The stream sequence, consumer sequence and pending count of a `$JS.ACK.` subject."""
    cdef Py_ssize_t starts[MAX_REPLY_TOKENS + 1]
    cdef Py_ssize_t count = 0, i, base
    if n < 8 or memcmp(p, b"$JS.ACK.", 8) != 0:
        return False
    starts[0] = 0
    count = 1
    for i in range(n):
        if p[i] == 46:  # '.'
            if count >= MAX_REPLY_TOKENS:
                return False
            starts[count] = i + 1
            count += 1
    starts[count] = n + 1
    if count == 9:
        base = 2  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>
    elif count >= 11:
        base = 4  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...
    else:
        return False
    return (_number(p + starts[base + 3], starts[base + 4] - starts[base + 3] - 1, sseq) and
            _number(p + starts[base + 4], starts[base + 5] - starts[base + 4] - 1, cseq) and
            _number(p + starts[base + 6], starts[base + 7] - starts[base + 6] - 1, pending))


def scan_messages(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t end,
                  long long sid):
    """The messages of subscription `sid` from `pos` up to `end`: (the position after the last
    one read, columns). Stops at an operation that is not a MSG/HMSG of `sid`, or at one whose
    bytes have not all come yet (the caller reads more and asks again from the position)."""
    if pos < 0 or end > buf.shape[0] or pos > end:
        raise ValueError(f"positions {pos}..{end} outside {buf.shape[0]} bytes")
    cdef Py_ssize_t capacity = (end - pos) // 14 + 1  # "MSG a 1 0\r\n\r\n": the least a message
    kind_a = np.empty(capacity, np.uint8)
    sseq_a = np.zeros(capacity, np.uint64)
    cseq_a = np.zeros(capacity, np.uint64)
    pending_a = np.zeros(capacity, np.uint64)
    reply_a = np.empty((capacity, 2), np.int64)
    header_a = np.empty((capacity, 2), np.int64)
    data_a = np.empty((capacity, 2), np.int64)
    cdef uint8_t[::1] kind = kind_a
    cdef uint64_t[::1] sseq = sseq_a, cseq = cseq_a, pending = pending_a
    cdef int64_t[:, ::1] reply = reply_a, header = header_a, data = data_a
    cdef const unsigned char* b = &buf[0] if buf.shape[0] else NULL
    cdef Py_ssize_t rows = 0, eol, start, ntok, i, hsize, total, line
    cdef Py_ssize_t tok_at[MAX_TOKENS]
    cdef Py_ssize_t tok_len[MAX_TOKENS]
    cdef uint64_t value, a, c, q
    cdef bint headed
    cdef const unsigned char* nl
    with nogil:
        while pos < end:
            if end - pos >= 5 and memcmp(b + pos, b"HMSG ", 5) == 0:
                headed = True
            elif end - pos >= 4 and memcmp(b + pos, b"MSG ", 4) == 0:
                headed = False
            else:
                break
            nl = <const unsigned char*>memchr(b + pos, 10, end - pos)
            if nl == NULL:
                break
            eol = nl - b  # the '\n'; the line ends with '\r' before it
            if eol == pos or b[eol - 1] != 13:
                break  # not a protocol line: leave it to the caller, which says so
            line = eol - 1
            ntok = 0
            i = pos
            while i < line and ntok < MAX_TOKENS:
                while i < line and b[i] == 32:
                    i += 1
                if i >= line:
                    break
                tok_at[ntok] = i
                while i < line and b[i] != 32:
                    i += 1
                tok_len[ntok] = i - tok_at[ntok]
                ntok += 1
            if headed and ntok not in (5, 6) or not headed and ntok not in (4, 5):
                break
            if not _number(b + tok_at[2], tok_len[2], &value) or <long long>value != sid:
                break
            if headed:
                if not _number(b + tok_at[ntok - 2], tok_len[ntok - 2], &value):
                    break
                hsize = <Py_ssize_t>value
            else:
                hsize = 0
            if not _number(b + tok_at[ntok - 1], tok_len[ntok - 1], &value):
                break
            total = <Py_ssize_t>value
            if hsize > total:
                break
            start = eol + 1
            if start + total + 2 > end:
                break  # the rest is still on its way
            if (ntok == 6 and headed) or (ntok == 5 and not headed):
                reply[rows, 0] = tok_at[3]
                reply[rows, 1] = tok_len[3]
            else:
                reply[rows, 0] = tok_at[0]
                reply[rows, 1] = 0
            header[rows, 0] = start
            header[rows, 1] = hsize
            data[rows, 0] = start + hsize
            data[rows, 1] = total - hsize
            if hsize >= 10 and memcmp(b + start, b"NATS/1.0 1", 10) == 0:
                kind[rows] = K_CONTROL
            elif _metadata(b + reply[rows, 0], reply[rows, 1], &a, &c, &q):
                kind[rows] = K_DATA
                sseq[rows] = a
                cseq[rows] = c
                pending[rows] = q
            else:
                kind[rows] = K_OTHER
            rows += 1
            pos = start + total + 2
    return pos, {"kind": kind_a[:rows], "stream_sequence": sseq_a[:rows],
                 "consumer_sequence": cseq_a[:rows], "pending": pending_a[:rows],
                 "reply": reply_a[:rows], "header": header_a[:rows], "data": data_a[:rows]}


cdef inline uint64_t _fnv1a(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h


def decode_events(const unsigned char[::1] buf, const int64_t[:, ::1] where, int sources,
                  int version):
    """The fixed fields of the event payloads at `where` (rows of offset, length), each one's
    scope as an index into the distinct scopes met (REASSIGN rows: 0xFFFFFFFF), and where each
    distinct scope lies: (columns, the first row that is no event of `version`, or -1)."""
    cdef Py_ssize_t n = where.shape[0], i, off, length
    number_a = np.empty(n, np.uint64)
    at_a = np.empty(n, np.int64)
    mask_a = np.empty(n, np.uint8)
    kind_a = np.empty(n, np.uint8)
    source_a = np.empty(n, np.uint8)
    scope_a = np.empty(n, np.uint32)
    # the distinct scopes: an open-addressing table of their hashes, grown at half full
    cdef Py_ssize_t size = 256, count = 0, slot, j
    table_a = np.full(size, -1, np.int64)
    hashes_a = np.zeros(size, np.uint64)
    names_a = np.empty((64, 2), np.int64)
    cdef int64_t[::1] table = table_a
    cdef uint64_t[::1] hashes = hashes_a
    cdef int64_t[:, ::1] names = names_a
    cdef uint64_t[::1] number = number_a
    cdef int64_t[::1] at = at_a
    cdef uint8_t[::1] mask = mask_a, kind = kind_a, source = source_a
    cdef uint32_t[::1] scope = scope_a
    cdef const unsigned char* b = &buf[0] if buf.shape[0] else NULL
    cdef Py_ssize_t bad = -1, total = buf.shape[0]
    cdef uint16_t scope_length
    cdef uint64_t u, h
    cdef int64_t s, found
    i = 0
    while i < n:
        with nogil:
            while i < n:
                off = where[i, 0]
                length = where[i, 1]
                if off < 0 or length < FIXED or off + length > total:
                    bad = i
                    break
                memcpy(&scope_length, b + off + 20, 2)  # little-endian hosts (x86-64, arm64)
                if b[off] != version or length != FIXED + scope_length or \
                        b[off + 1] < 1 or b[off + 1] > 3 or b[off + 3] >= sources:
                    bad = i
                    break
                kind[i] = b[off + 1]
                mask[i] = b[off + 2]
                source[i] = b[off + 3]
                memcpy(&u, b + off + 4, 8)
                memcpy(&s, b + off + 12, 8)
                number[i] = u
                at[i] = s
                if kind[i] == 3:  # a reassignment has no scope
                    scope[i] = 0xFFFFFFFF
                    i += 1
                    continue
                if 2 * (count + 1) > size or count + 1 > names.shape[0]:
                    break  # the table grows, with the GIL
                h = _fnv1a(b + off + FIXED, scope_length)
                slot = h & (size - 1)
                while True:
                    found = table[slot]
                    if found < 0:
                        table[slot] = count
                        hashes[slot] = h
                        names[count, 0] = off + FIXED
                        names[count, 1] = scope_length
                        found = count
                        count += 1
                        break
                    if hashes[slot] == h and names[found, 1] == scope_length and \
                            memcmp(b + names[found, 0], b + off + FIXED, scope_length) == 0:
                        break
                    slot = (slot + 1) & (size - 1)
                scope[i] = <uint32_t>found
                i += 1
        if bad >= 0 or i >= n:
            break
        # grow: a table twice the size, the names met so far placed again
        if count + 1 > names.shape[0]:
            names_a = np.concatenate([names_a, np.empty_like(names_a)])
            names = names_a
        if 2 * (count + 1) > size:
            size *= 2
            table_a = np.full(size, -1, np.int64)
            hashes_a = np.zeros(size, np.uint64)
            table = table_a
            hashes = hashes_a
            for j in range(count):
                h = _fnv1a(b + names[j, 0], names[j, 1])
                slot = h & (size - 1)
                while table[slot] >= 0:
                    slot = (slot + 1) & (size - 1)
                table[slot] = j
                hashes[slot] = h
    return {"number": number_a, "at": at_a, "mask": mask_a, "kind": kind_a,
            "source": source_a, "scope": scope_a, "names": names_a[:count]}, bad
