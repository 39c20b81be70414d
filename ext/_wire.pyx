# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""CheckBatch on the wire, without a Python object per check.

The server's side: decodes the bytes of an anning.v1.CheckBatchRequest (protobuf wire format: repeated
CheckRequest{1: sender, 2: number, 3: category}) straight into arrays of sender ids, E.164
numbers and category bits, and encodes the answers as the bytes of a CheckBatchResponse
(repeated CheckResponse{1: suppressed, 2: scope, 3: error}). Senders and categories are looked
up by their raw bytes (a text seen for the first time goes to Python once); numbers go through
the C normaliser. Only a bad item makes Python objects: its error message.

The client's side (the coalescing checkers of anning.client and anning.aio): `encode_checks`
writes the request of many (sender, number, category) texts in one pass, `decode_results`
reads a CheckBatchResponse into scope codes and the items' errors.
"""

cimport numpy as cnp
import numpy as np
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

from number cimport AN_NUM_OK, an_parse_number
from strtab cimport (
    an_strtab, an_strtab_free, an_strtab_get, an_strtab_init, an_strtab_put,
)

cnp.import_array()


MAX_CACHED_TEXTS = 1 << 20


from anning.errors import InvalidInput, TooLarge


class MalformedRequest(InvalidInput):
    """Bytes that are not a CheckBatchRequest (bad input: INVALID_ARGUMENT)."""


cdef inline int read_varint(const unsigned char *buf, Py_ssize_t n, Py_ssize_t *pos,
                            uint64_t *out) noexcept:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef unsigned char b
    while pos[0] < n and shift < 64:
        b = buf[pos[0]]
        pos[0] += 1
        value |= <uint64_t>(b & 0x7F) << shift
        if not (b & 0x80):
            out[0] = value
            return 1
        shift += 7
    return 0


cdef enum:
    MAX_FIELD_NUMBER = (1 << 29) - 1  # protobuf's limit: a larger one is corrupt wire format
    MAX_GROUP_DEPTH = 100             # protobuf's default recursion limit


cdef inline int read_key(const unsigned char *buf, Py_ssize_t n, Py_ssize_t *pos, int *field,
                         int *wire) noexcept:
    """A field's key: 0 unless its varint is whole and its field number 1 to 2^29-1, as
    protobuf requires. (Field number 0 and larger ones are corrupt wire format; a key over 32
    bits, taken as an int, used to alias a small field number: 2^32 + 1 read as field 1.)"""
    cdef uint64_t key
    if not read_varint(buf, n, pos, &key):
        return 0
    if key >> 3 < 1 or key >> 3 > MAX_FIELD_NUMBER:
        return 0
    field[0], wire[0] = <int>(key >> 3), <int>(key & 7)
    return 1


cdef inline int skip_group(const unsigned char *buf, Py_ssize_t n, Py_ssize_t *pos,
                           int field, int max_depth) noexcept:
    """Skip a group (wire type 3, deprecated but valid protobuf: an unknown field may be one)
    up to its end-group key, which must carry the same field number. As protobuf (upb) does:
    at most max_depth groups deep, and field number 0 is let pass inside a group."""
    cdef int fields[MAX_GROUP_DEPTH]
    cdef int depth = 1, f, w
    cdef uint64_t key, v
    fields[0] = field
    while depth > 0:
        if not read_varint(buf, n, pos, &key) or key >> 3 > MAX_FIELD_NUMBER:
            return 0
        f, w = <int>(key >> 3), <int>(key & 7)
        if w == 4:
            depth -= 1
            if fields[depth] != f:
                return 0
        elif w == 3:
            if depth >= max_depth:
                return 0
            fields[depth] = f
            depth += 1
        elif w == 0:
            if not read_varint(buf, n, pos, &v):
                return 0
        elif w == 1 or w == 5:
            if n - pos[0] < (8 if w == 1 else 4):
                return 0
            pos[0] += 8 if w == 1 else 4
        elif w == 2:
            if not read_varint(buf, n, pos, &v) or v > <uint64_t>(n - pos[0]):
                return 0
            pos[0] += <Py_ssize_t>v
        else:
            return 0
    return 1


cdef inline int skip_field(const unsigned char *buf, Py_ssize_t n, Py_ssize_t *pos,
                           int wire, int field, int max_depth) noexcept:
    """Skip a field the decoder does not read; max_depth: how deep groups may nest here
    (protobuf counts the enclosing messages in the same limit)."""
    cdef uint64_t v
    if wire == 0:
        return read_varint(buf, n, pos, &v)
    if wire == 1:
        pos[0] += 8
    elif wire == 5:
        pos[0] += 4
    elif wire == 2:
        if not read_varint(buf, n, pos, &v) or v > <uint64_t>(n - pos[0]):
            return 0
        pos[0] += <Py_ssize_t>v
    elif wire == 3:
        return skip_group(buf, n, pos, field, max_depth)
    else:
        return 0
    return pos[0] <= n


cdef class BatchCodec:
    """Per serving index: its senders' ids and categories' bits, cached by raw bytes."""

    cdef an_strtab senders, categories
    cdef object resolve_sender, resolve_category, normalize
    cdef list reasons
    cdef int default_cc, default_bit

    def __cinit__(self):
        an_strtab_init(&self.senders, 1 << 10)
        an_strtab_init(&self.categories, 16)

    def __init__(self, resolve_sender, resolve_category, normalize_number, int default_bit=0,
                 int default_country=86):
        """resolve_sender(str) -> sender id (UNKNOWN for a sender the list has not seen);
        resolve_category(str) -> bit; both raise ValueError (InvalidInput) for bad text."""
        self.resolve_sender = resolve_sender
        self.resolve_category = resolve_category
        self.normalize = normalize_number
        self.default_bit = default_bit
        self.default_cc = default_country
        self.reasons = []

    def __dealloc__(self):
        an_strtab_free(&self.senders)
        an_strtab_free(&self.categories)

    cdef int64_t _lookup(self, an_strtab *table, object resolve, const unsigned char *s,
                         Py_ssize_t n) except? -2:
        cdef int64_t value
        if an_strtab_get(table, s, n, &value):
            return value
        try:
            value = resolve(bytes(s[:n]).decode("utf-8"))
        except UnicodeDecodeError:
            self.reasons.append(f"{_show(s, n)} is not valid UTF-8")
            value = -len(self.reasons)
        except ValueError as exc:
            text = str(exc)
            self.reasons.append(text.partition(": ")[2] or text)
            value = -len(self.reasons)
        if table.count < MAX_CACHED_TEXTS and an_strtab_put(table, s, n, value) < 0:
            raise MemoryError()
        return value

    def decode(self, const unsigned char[::1] data, Py_ssize_t max_items):
        """(sender ids uint32, numbers uint64, category bits uint8, errors {position: text})
        of a CheckBatchRequest; bad items get 0 as number and an error."""
        cdef const unsigned char *buf = &data[0] if data.shape[0] else NULL
        cdef Py_ssize_t n = data.shape[0], pos = 0, end, count = 0, i, p
        cdef uint64_t length
        cdef int field, wire
        # First pass: count the items, so the arrays are allocated once.
        while pos < n:
            if not read_key(buf, n, &pos, &field, &wire):
                raise MalformedRequest("request: not a CheckBatchRequest")
            if field == 1 and wire == 2:
                if not read_varint(buf, n, &pos, &length) or length > <uint64_t>(n - pos):
                    raise MalformedRequest("request: not a CheckBatchRequest")
                pos += <Py_ssize_t>length
                count += 1
                if count > max_items:
                    raise TooLarge(f"checks: more than {max_items} in one batch")
            elif not skip_field(buf, n, &pos, wire, field, MAX_GROUP_DEPTH):
                raise MalformedRequest("request: not a CheckBatchRequest")
        ids_arr = np.empty(count, np.uint32)
        numbers_arr = np.zeros(count, np.uint64)
        bits_arr = np.empty(count, np.uint8)
        cdef uint32_t[::1] ids = ids_arr
        cdef uint64_t[::1] numbers = numbers_arr
        cdef uint8_t[::1] bits = bits_arr
        errors = {}
        cdef const unsigned char *sender
        cdef const unsigned char *number
        cdef const unsigned char *category
        cdef Py_ssize_t sender_n, number_n, category_n
        cdef int64_t value
        cdef uint64_t parsed
        cdef size_t bad_at
        pos = 0
        i = 0
        while pos < n:
            read_key(buf, n, &pos, &field, &wire)  # the first pass found every key good
            if not (field == 1 and wire == 2):
                skip_field(buf, n, &pos, wire, field, MAX_GROUP_DEPTH)
                continue
            read_varint(buf, n, &pos, &length)
            end = pos + <Py_ssize_t>length
            sender = number = category = NULL
            sender_n = number_n = category_n = 0
            p = pos
            while p < end:
                if not read_key(buf, end, &p, &field, &wire):
                    raise MalformedRequest(f"checks[{i}]: not a CheckRequest")
                if wire == 2 and 1 <= field <= 3:
                    if not read_varint(buf, end, &p, &length) or length > <uint64_t>(end - p):
                        raise MalformedRequest(f"checks[{i}]: not a CheckRequest")
                    if field == 1:
                        sender, sender_n = buf + p, <Py_ssize_t>length
                    elif field == 2:
                        number, number_n = buf + p, <Py_ssize_t>length
                    else:
                        category, category_n = buf + p, <Py_ssize_t>length
                    p += <Py_ssize_t>length
                elif not skip_field(buf, end, &p, wire, field, MAX_GROUP_DEPTH - 1):
                    raise MalformedRequest(f"checks[{i}]: not a CheckRequest")
            pos = end
            ids[i] = 0
            bits[i] = self.default_bit
            # sender
            value = self._lookup(&self.senders, self.resolve_sender, sender, sender_n) \
                if sender_n else -0x7FFFFFFF
            if value == -0x7FFFFFFF:
                errors[i] = f"checks[{i}].sender: '' is empty"
                i += 1
                continue
            if value < 0:
                errors[i] = f"checks[{i}].sender: {self.reasons[-value - 1]}"
                i += 1
                continue
            ids[i] = <uint32_t>value
            # category
            if category_n:
                value = self._lookup(&self.categories, self.resolve_category, category,
                                     category_n)
                if value < 0:
                    errors[i] = f"checks[{i}].category: {self.reasons[-value - 1]}"
                    i += 1
                    continue
                bits[i] = <uint8_t>value
            # number
            if _ascii(number, number_n) and an_parse_number(
                    number, number_n, self.default_cc, &parsed, &bad_at) == AN_NUM_OK:
                numbers[i] = parsed
            else:
                try:
                    numbers[i] = self.normalize(bytes(number[:number_n]).decode("utf-8"),
                                                self.default_cc, f"checks[{i}].number")
                except UnicodeDecodeError:
                    errors[i] = f"checks[{i}].number: {_show(number, number_n)} is not UTF-8"
                except ValueError as exc:
                    errors[i] = str(exc)
            i += 1
        return ids_arr, numbers_arr, bits_arr, errors


def item_senders(const unsigned char[::1] data):
    """The sender text of each check of a request BatchCodec.decode read, by the same walk, so
    that the i-th is decode's i-th: for the few checks that need their sender by name (a sender
    the list does not know, of a number with real-time events). Text that is not UTF-8 comes
    with replacement characters (decode gave its check an error; it is not checked).

    The server used to re-read the request with protobuf for this, which refuses a whole
    request for one string that is not UTF-8: a batch with such an item and a check that
    needed its sender by name failed with DecodeError (INTERNAL) instead of answering."""
    cdef const unsigned char *buf = &data[0] if data.shape[0] else NULL
    cdef Py_ssize_t n = data.shape[0], pos = 0, end, p
    cdef Py_ssize_t sender_at, sender_n
    cdef uint64_t length
    cdef int field, wire
    out = []
    while pos < n:
        if not read_key(buf, n, &pos, &field, &wire):
            raise MalformedRequest("request: not a CheckBatchRequest")
        if not (field == 1 and wire == 2):
            if not skip_field(buf, n, &pos, wire, field, MAX_GROUP_DEPTH):
                raise MalformedRequest("request: not a CheckBatchRequest")
            continue
        if not read_varint(buf, n, &pos, &length) or length > <uint64_t>(n - pos):
            raise MalformedRequest("request: not a CheckBatchRequest")
        end = pos + <Py_ssize_t>length
        sender_at = sender_n = 0
        p = pos
        while p < end:
            if not read_key(buf, end, &p, &field, &wire):
                raise MalformedRequest(f"checks[{len(out)}]: not a CheckRequest")
            if wire == 2 and 1 <= field <= 3:
                if not read_varint(buf, end, &p, &length) or length > <uint64_t>(end - p):
                    raise MalformedRequest(f"checks[{len(out)}]: not a CheckRequest")
                if field == 1:
                    sender_at, sender_n = p, <Py_ssize_t>length
                p += <Py_ssize_t>length
            elif not skip_field(buf, end, &p, wire, field, MAX_GROUP_DEPTH - 1):
                raise MalformedRequest(f"checks[{len(out)}]: not a CheckRequest")
        out.append(bytes(buf[sender_at:sender_at + sender_n]).decode("utf-8", "replace"))
        pos = end
    return out


cdef str _show(const unsigned char *s, Py_ssize_t n):
    return repr(bytes(s[:n]).decode("utf-8", "replace"))


cdef inline bint _ascii(const unsigned char *s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if s[i] >= 0x80:
            return False
    return True


cdef inline Py_ssize_t put_varint(unsigned char *out, uint64_t v) noexcept:
    cdef Py_ssize_t k = 0
    while v >= 0x80:
        out[k] = <unsigned char>(v | 0x80)
        v >>= 7
        k += 1
    out[k] = <unsigned char>v
    return k + 1


def encode_results(const uint8_t[::1] codes, dict errors):
    """The bytes of a CheckBatchResponse: per check, suppressed and scope, or the error."""
    cdef Py_ssize_t n = codes.shape[0], i, size = 0, pos = 0, k
    cdef bytes text
    cdef const unsigned char *raw
    encoded = {i: e.encode("utf-8") for i, e in errors.items()}
    for i in range(n):
        size += 6
    for text in encoded.values():
        size += len(text) + 10
    out = bytearray(size)
    cdef unsigned char *o = out
    cdef unsigned char header[16]
    cdef Py_ssize_t body
    for i in range(n):
        if encoded and i in encoded:
            text = encoded[i]
            raw = text
            k = put_varint(header, len(text))
            body = 1 + k + len(text)
            o[pos] = 0x0A
            pos += 1
            pos += put_varint(o + pos, body)
            o[pos] = 0x1A
            pos += 1
            memcpy(o + pos, header, k)
            pos += k
            memcpy(o + pos, raw, len(text))
            pos += len(text)
        elif codes[i]:
            o[pos] = 0x0A
            o[pos + 1] = 4
            o[pos + 2] = 0x08
            o[pos + 3] = 1
            o[pos + 4] = 0x10
            o[pos + 5] = codes[i]
            pos += 6
        else:
            o[pos] = 0x0A
            o[pos + 1] = 0
            pos += 2
    return bytes(out[:pos])


cdef inline Py_ssize_t varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t k = 1
    while v >= 0x80:
        v >>= 7
        k += 1
    return k


cdef inline Py_ssize_t put_text(unsigned char *out, unsigned char tag, const char *s,
                                Py_ssize_t n) noexcept:
    out[0] = tag
    cdef Py_ssize_t k = 1 + put_varint(out + 1, <uint64_t>n)
    memcpy(out + k, s, n)
    return k + n


def encode_checks(list senders, list numbers, list categories=None):
    """The bytes of a CheckBatchRequest of the checks (senders[i], numbers[i], categories[i]);
    a number may be an int; an empty category is left out (marketing). Texts go as they are:
    the server normalises and names a bad one in the item's error."""
    cdef Py_ssize_t n = len(senders), i, size = 0, pos = 0, body
    if len(numbers) != n or (categories is not None and len(categories) != n):
        raise ValueError(f"encode_checks: {n} senders, {len(numbers)} numbers"
                         + ("" if categories is None else f", {len(categories)} categories"))
    cdef list texts = [None] * n
    cdef const char *s
    cdef const char *num
    cdef const char *cat
    cdef Py_ssize_t sn, nn, cn
    cdef object number
    # sizes first: the output is allocated once
    cdef Py_ssize_t[::1] bodies = np.empty(n, np.intp)
    for i in range(n):
        number = numbers[i]
        if not PyUnicode_Check(number):
            number = str(number)
        texts[i] = number
        PyUnicode_AsUTF8AndSize(senders[i], &sn)
        PyUnicode_AsUTF8AndSize(number, &nn)
        body = 1 + varint_size(sn) + sn + 1 + varint_size(nn) + nn
        if categories is not None:
            PyUnicode_AsUTF8AndSize(categories[i], &cn)
            if cn:
                body += 1 + varint_size(cn) + cn
        bodies[i] = body
        size += 1 + varint_size(body) + body
    out = bytearray(size)
    cdef unsigned char *o = out
    for i in range(n):
        o[pos] = 0x0A
        pos += 1
        pos += put_varint(o + pos, <uint64_t>bodies[i])
        s = PyUnicode_AsUTF8AndSize(senders[i], &sn)
        pos += put_text(o + pos, 0x0A, s, sn)
        num = PyUnicode_AsUTF8AndSize(texts[i], &nn)
        pos += put_text(o + pos, 0x12, num, nn)
        if categories is not None:
            cat = PyUnicode_AsUTF8AndSize(categories[i], &cn)
            if cn:
                pos += put_text(o + pos, 0x1A, cat, cn)
    return bytes(out)


class MalformedResponse(ValueError):
    """Bytes that are not the CheckBatchResponse of the request sent."""


def decode_results(const unsigned char[::1] data, Py_ssize_t count):
    """(scope codes uint8, errors {position: text}) of a CheckBatchResponse that must answer
    `count` checks."""
    cdef const unsigned char *buf = &data[0] if data.shape[0] else NULL
    cdef Py_ssize_t n = data.shape[0], pos = 0, end, p, i = 0
    cdef uint64_t key, length, value
    cdef int field, wire
    codes_arr = np.zeros(count, np.uint8)
    cdef uint8_t[::1] codes = codes_arr
    errors = {}
    while pos < n:
        if not read_key(buf, n, &pos, &field, &wire):
            raise MalformedResponse("response: not a CheckBatchResponse")
        if not (field == 1 and wire == 2):
            if not skip_field(buf, n, &pos, wire, field, MAX_GROUP_DEPTH):
                raise MalformedResponse("response: not a CheckBatchResponse")
            continue
        if not read_varint(buf, n, &pos, &length) or length > <uint64_t>(n - pos):
            raise MalformedResponse("response: not a CheckBatchResponse")
        if i >= count:
            raise MalformedResponse(f"response: more than the {count} results asked for")
        end = pos + <Py_ssize_t>length
        p = pos
        while p < end:
            if not read_key(buf, end, &p, &field, &wire):
                raise MalformedResponse(f"results[{i}]: not a CheckResponse")
            if field == 2 and wire == 0:
                if not read_varint(buf, end, &p, &value):
                    raise MalformedResponse(f"results[{i}]: not a CheckResponse")
                codes[i] = <uint8_t>value if value < 4 else 0
            elif field == 3 and wire == 2:
                if not read_varint(buf, end, &p, &length) or length > <uint64_t>(end - p):
                    raise MalformedResponse(f"results[{i}]: not a CheckResponse")
                errors[i] = bytes(buf[p:p + <Py_ssize_t>length]).decode("utf-8", "replace")
                p += <Py_ssize_t>length
            elif not skip_field(buf, end, &p, wire, field, MAX_GROUP_DEPTH - 1):
                raise MalformedResponse(f"results[{i}]: not a CheckResponse")
        pos = end
        i += 1
    if i != count:
        raise MalformedResponse(f"response: {i} results for {count} checks")
    return codes_arr, errors
