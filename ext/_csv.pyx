# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Streaming parser of snapshot rows (SPEC §5): CSV or TSV bytes in, index arrays out.

The caller feeds chunks of bytes; the parser consumes whole records and says how far it got,
so a record split between two chunks is fed again with the next. Per row it makes no Python
object: numbers go through the C normaliser, and senders, categories and sources are looked up
by their raw bytes in hash tables; only a text seen for the first time (a few tens of thousands
in a night's list), a number with non-ASCII characters (full-width digits), and a rejected row
reach Python. Quotes follow RFC 4180 (doubled quotes, delimiters and newlines inside quotes).
"""

cimport numpy as cnp
import numpy as np
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr

from number cimport AN_NUM_OK, an_parse_number
from strtab cimport (
    an_strtab, an_strtab_free, an_strtab_get, an_strtab_init, an_strtab_put,
)

cnp.import_array()


cdef extern from "eventtime.h" nogil:
    int an_parse_time(const unsigned char *s, size_t n, int default_offset_minutes,
                      int64_t *out_ms)

COLUMNS = ("number", "sender", "category", "at", "source", "action", "seq")
cdef enum:
    COL_NUMBER = 0
    COL_SENDER = 1
    COL_CATEGORY = 2
    COL_AT = 3
    COL_SOURCE = 4
    COL_ACTION = 5
    COL_SEQ = 6         # an exported event's sequence: read back, not kept
    MAX_FIELDS = 16
    RAW_LIMIT = 256     # bytes of a rejected record kept in the rejects file
    REC_OK = 0
    REC_MORE = 1        # the record goes on past the end of the chunk
    REC_TOO_LONG = 2
    SLOW_MAX = 4096     # rows set aside for Python before the GIL is taken for them

cdef enum:
    RECORD_LIMIT = 65536  # bytes; a longer record is rejected and skipped to the next newline
MAX_RECORD = RECORD_LIMIT


cdef struct SlowRow:
    # a row the GIL-free pass set aside: where it starts, its line, and why
    Py_ssize_t pos
    Py_ssize_t line
    int status          # REC_OK (a record to parse with Python) or REC_TOO_LONG


cdef class SnapshotParser:
    """Parses the rows after the header. `columns` are the header's names (from COLUMNS)."""

    cdef int delimiter, n_columns, default_cc, offset_minutes
    cdef int roles[MAX_FIELDS]
    cdef const unsigned char *fstart[MAX_FIELDS]
    cdef Py_ssize_t flen[MAX_FIELDS]
    cdef bint fescaped[MAX_FIELDS]
    cdef unsigned char *scratch
    cdef an_strtab senders, categories, sources, actions_seen
    cdef object resolve_sender, resolve_category, resolve_source, resolve_action
    cdef object normalize_text_number
    cdef list reasons
    cdef readonly object numbers, scopes, masks
    # a row's time (Unix ms, 0: not given) and action (1 opt-out, 2 opt-in, 3 reassignment):
    # kept only once a file of the load has the column (a list without them costs nothing)
    cdef readonly object ats, actions
    cdef uint64_t *p_numbers
    cdef uint32_t *p_scopes
    cdef uint8_t *p_masks
    cdef int64_t *p_ats
    cdef uint8_t *p_actions
    cdef Py_ssize_t capacity
    cdef readonly Py_ssize_t length, rows, rejected, blank_lines, line
    cdef readonly int64_t newest_at
    cdef int64_t default_mask
    cdef bint skipping, stray_quote
    cdef SlowRow *slow
    cdef Py_ssize_t n_slow
    cdef public list rejects

    def __cinit__(self):
        self.scratch = NULL
        self.slow = NULL
        an_strtab_init(&self.senders, 1 << 12)
        an_strtab_init(&self.categories, 16)
        an_strtab_init(&self.sources, 16)
        an_strtab_init(&self.actions_seen, 16)

    def __init__(self, columns, str delimiter, int default_mask, resolve_sender,
                 resolve_category, resolve_source, normalize_text_number, int default_country=86,
                 int offset_minutes=480, Py_ssize_t first_line=2, Py_ssize_t capacity=1 << 20,
                 resolve_action=None):
        self.ats = None
        self.actions = None
        self.default_mask = default_mask
        self.resolve_sender = resolve_sender
        self.resolve_category = resolve_category
        self.resolve_source = resolve_source
        self.resolve_action = resolve_action or _action_code
        self.normalize_text_number = normalize_text_number
        self.default_cc = default_country
        self.offset_minutes = offset_minutes
        self.reasons = []
        self.rejects = []
        self.newest_at = 0
        self.scratch = <unsigned char *>malloc(MAX_RECORD + 1)
        self.slow = <SlowRow *>malloc(SLOW_MAX * sizeof(SlowRow))
        if self.scratch == NULL or self.slow == NULL:
            raise MemoryError()
        self.capacity = max(capacity, 16)
        self.numbers = np.empty(self.capacity, np.uint64)
        self.scopes = np.empty(self.capacity, np.uint32)
        self.masks = np.empty(self.capacity, np.uint8)
        self._refresh()
        self.start_file(columns, delimiter, first_line)

    def __dealloc__(self):
        free(self.scratch)
        free(self.slow)
        an_strtab_free(&self.senders)
        an_strtab_free(&self.categories)
        an_strtab_free(&self.sources)
        an_strtab_free(&self.actions_seen)

    cdef void _refresh(self):
        self.p_numbers = <uint64_t *>cnp.PyArray_DATA(self.numbers)
        self.p_scopes = <uint32_t *>cnp.PyArray_DATA(self.scopes)
        self.p_masks = <uint8_t *>cnp.PyArray_DATA(self.masks)
        self.p_ats = <int64_t *>cnp.PyArray_DATA(self.ats) if self.ats is not None else NULL
        self.p_actions = <uint8_t *>cnp.PyArray_DATA(self.actions) \
            if self.actions is not None else NULL

    cdef int _grow(self) except -1:
        # resize in place: realloc (mremap for large blocks) rather than a copy beside it
        self.capacity = self.capacity + self.capacity // 2
        self.numbers.resize(self.capacity, refcheck=False)
        self.scopes.resize(self.capacity, refcheck=False)
        self.masks.resize(self.capacity, refcheck=False)
        if self.ats is not None:
            self.ats.resize(self.capacity, refcheck=False)
        if self.actions is not None:
            self.actions.resize(self.capacity, refcheck=False)
        self._refresh()
        return 0

    def start_file(self, columns, str delimiter, Py_ssize_t first_line=2):
        """Go on with the rows of another file (its own header), into the same arrays."""
        if len(columns) > MAX_FIELDS:
            raise ValueError(f"columns: {len(columns)} is more than {MAX_FIELDS}")
        self.n_columns = len(columns)
        for i, name in enumerate(columns):
            self.roles[i] = COLUMNS.index(name)
        self.delimiter = ord(delimiter)
        self.line = first_line
        self.skipping = False
        if COL_AT in [self.roles[i] for i in range(self.n_columns)] and self.ats is None:
            self.ats = np.zeros(self.capacity, np.int64)  # 0: the rows before had no time
        if COL_ACTION in [self.roles[i] for i in range(self.n_columns)] and self.actions is None:
            self.actions = np.ones(self.capacity, np.uint8)  # the rows before: opt-outs
        self._refresh()

    def arrays(self):
        """The parsed rows as (numbers, scope ids, masks), trimmed to their length (and so are
        `ats` and `actions`, where a file had those columns)."""
        self.numbers.resize(self.length, refcheck=False)
        self.scopes.resize(self.length, refcheck=False)
        self.masks.resize(self.length, refcheck=False)
        if self.ats is not None:
            self.ats.resize(self.length, refcheck=False)
        if self.actions is not None:
            self.actions.resize(self.length, refcheck=False)
        self.capacity = self.length
        self._refresh()
        return self.numbers, self.scopes, self.masks

    @property
    def distinct_senders(self):
        return self.senders.count

    cdef int _scan(self, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t n, bint final,
                   Py_ssize_t *end, int *fields, Py_ssize_t *newlines) noexcept nogil:
        """Split one record starting at pos into fields."""
        cdef Py_ssize_t p = pos, q
        cdef int nf = 0
        cdef unsigned char c
        # A record's bytes are [pos, limit) at most: a byte at limit may only end it.
        cdef Py_ssize_t limit = pos + RECORD_LIMIT
        newlines[0] = 0
        self.stray_quote = False
        while True:
            if p - pos > RECORD_LIMIT:
                return REC_TOO_LONG
            if nf < MAX_FIELDS:
                self.fescaped[nf] = False
            if p < n and buf[p] == 34:  # '"': a quoted field
                p += 1
                if nf < MAX_FIELDS:
                    self.fstart[nf] = buf + p
                while True:
                    while p < n and p < limit and buf[p] != 34:
                        if buf[p] == 10:
                            newlines[0] += 1
                        p += 1
                    if p >= limit:
                        return REC_TOO_LONG
                    if p >= n:
                        if not final:
                            return REC_MORE
                        end[0] = n  # a quote that never closes: the rest is one bad record
                        fields[0] = -1
                        return REC_OK
                    if p + 1 < n and buf[p + 1] == 34:  # a doubled quote
                        if nf < MAX_FIELDS:
                            self.fescaped[nf] = True
                        p += 2
                        continue
                    if p + 1 >= n and not final:
                        return REC_MORE
                    break
                if nf < MAX_FIELDS:
                    self.flen[nf] = buf + p - self.fstart[nf]
                p += 1  # the closing quote
                if p < n and buf[p] != self.delimiter and buf[p] != 10 and buf[p] != 13:
                    self.stray_quote = True  # text after the closing quote: a bad record
                    while p < n and p <= limit and buf[p] != self.delimiter and buf[p] != 10 \
                            and buf[p] != 13:
                        p += 1
                    if p > limit:
                        return REC_TOO_LONG
            else:
                q = p
                while q < n and q <= limit:
                    c = buf[q]
                    if c == self.delimiter or c == 10 or c == 13:
                        break
                    q += 1
                if q > limit:
                    return REC_TOO_LONG
                if q >= n and not final:
                    return REC_MORE
                if nf < MAX_FIELDS:
                    self.fstart[nf] = buf + p
                    self.flen[nf] = q - p
                p = q
            nf += 1
            if p >= n:
                if not final:
                    return REC_MORE
                end[0] = p
                fields[0] = nf
                return REC_OK
            c = buf[p]
            if c == self.delimiter:
                p += 1
                continue
            if c == 13:
                if p + 1 >= n and not final:
                    return REC_MORE
                p += 2 if p + 1 < n and buf[p + 1] == 10 else 1
            else:
                p += 1
            newlines[0] += 1
            end[0] = p
            fields[0] = nf
            return REC_OK

    def feed(self, const unsigned char[::1] chunk, bint final=False):
        """Parse the whole records of chunk; return how many bytes were consumed.

        The rows that need no Python - nearly all - are parsed with the GIL released (a
        load's events are read meanwhile, and a server's checks go on). A row that does (a
        reject, a text seen for the first time, a number in other than ASCII) is set aside
        with its line and parsed with the GIL after the rows around it, up to SLOW_MAX at a
        time: taking the GIL back for each would wait out another thread's switch interval
        every time. So such a row lands after the rows that followed it (order is no part of
        a list); rejects and first sightings keep their order."""
        cdef const unsigned char *buf = &chunk[0] if chunk.shape[0] else NULL
        cdef Py_ssize_t n = chunk.shape[0], pos = 0, before
        while True:
            before = pos
            with nogil:
                pos = self._run(buf, pos, n, final)
            if self.n_slow:
                self._slow_rows(buf, n, final)
            if self.length == self.capacity:
                self._grow()
            elif pos == before or pos >= n:
                return pos

    cdef Py_ssize_t _run(self, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t n,
                         bint final) noexcept nogil:
        """Parse records from pos, setting aside those that need Python, until the chunk's
        whole records end, the arrays are full, or SLOW_MAX rows are set aside; return the
        position reached."""
        cdef Py_ssize_t end = 0, newlines = 0
        cdef const unsigned char *nl
        cdef int status, fields = 0
        while pos < n and self.n_slow < SLOW_MAX and self.length < self.capacity:
            if self.skipping:
                nl = <const unsigned char *>memchr(buf + pos, 10, n - pos)
                if nl == NULL:
                    return n
                pos = nl - buf + 1
                self.line += 1
                self.skipping = False
                continue
            if buf[pos] == 10 or buf[pos] == 13:  # a blank line
                if buf[pos] == 13 and pos + 1 >= n and not final:
                    return pos
                pos += 2 if buf[pos] == 13 and pos + 1 < n and buf[pos + 1] == 10 else 1
                self.line += 1
                self.blank_lines += 1
                continue
            status = self._scan(buf, pos, n, final, &end, &fields, &newlines)
            if status == REC_MORE:
                return pos
            self.rows += 1
            if status == REC_TOO_LONG or fields < 0 or not self._record_fast(fields):
                self.slow[self.n_slow].pos = pos
                self.slow[self.n_slow].line = self.line
                self.slow[self.n_slow].status = status
                self.n_slow += 1
                if status == REC_TOO_LONG:
                    self.skipping = True  # to the next newline
                    continue
            self.line += newlines if newlines else 1
            pos = end
        return pos

    cdef void _slow_rows(self, const unsigned char *buf, Py_ssize_t n, bint final):
        """Parse the rows set aside, in order, at their lines (with the GIL)."""
        cdef Py_ssize_t i, end = 0, newlines = 0, line = self.line
        cdef int fields = 0
        cdef SlowRow row
        for i in range(self.n_slow):
            row = self.slow[i]
            self.line = row.line
            if row.status == REC_TOO_LONG:
                self._reject(buf + row.pos, min(n - row.pos, <Py_ssize_t>RAW_LIMIT), "",
                             f"record longer than {MAX_RECORD} bytes")
                continue
            self._scan(buf, row.pos, n, final, &end, &fields, &newlines)  # as the first time
            if fields < 0:
                self._reject(buf + row.pos, end - row.pos, "", "a quote is not closed")
            else:
                self._record(buf + row.pos, end - row.pos, fields)
        self.n_slow = 0
        self.line = line

    cdef void _reject(self, const unsigned char *raw, Py_ssize_t n, str column, str reason):
        while n > 0 and (raw[n - 1] == 10 or raw[n - 1] == 13):
            n -= 1
        self.rejected += 1
        self.rejects.append((self.line, column, reason, bytes(raw[:min(n, RAW_LIMIT)])))

    cdef const unsigned char *_field(self, int i, Py_ssize_t *n) noexcept nogil:
        """Field i's bytes, with doubled quotes undone (into the scratch buffer)."""
        cdef Py_ssize_t j, k = 0
        cdef const unsigned char *s = self.fstart[i]
        n[0] = self.flen[i]
        if not self.fescaped[i]:
            return s
        j = 0
        while j < self.flen[i]:
            self.scratch[k] = s[j]
            k += 1
            j += 2 if s[j] == 34 and j + 1 < self.flen[i] and s[j + 1] == 34 else 1
        n[0] = k
        return self.scratch

    cdef bint _record_fast(self, int fields) noexcept nogil:
        """Store the record just scanned if it needs no Python: every field well formed and
        every text seen before, and room in the arrays. Else store nothing and return False:
        `_record` then takes it (and the same record it would store the same way)."""
        cdef int i, role
        cdef Py_ssize_t n
        cdef const unsigned char *s
        cdef uint64_t number = 0
        cdef int64_t scope = -1, mask = self.default_mask, value, at = 0, action = 1
        cdef size_t bad_at
        if self.stray_quote or fields != self.n_columns or self.length == self.capacity:
            return False
        for i in range(fields):
            if memchr(self.fstart[i], 0, self.flen[i]) != NULL:
                return False
        for i in range(fields):
            role = self.roles[i]
            s = self._field(i, &n)
            if role == COL_NUMBER:
                if not _ascii(s, n) or \
                        an_parse_number(s, n, self.default_cc, &number, &bad_at) != AN_NUM_OK:
                    return False
            elif role == COL_SENDER:
                if not _seen(&self.senders, s, n, &scope):
                    return False
            elif role == COL_CATEGORY:
                if n and not _seen(&self.categories, s, n, &mask):
                    return False
            elif role == COL_AT:
                if n and not _blank(s, n):
                    if not an_parse_time(s, n, self.offset_minutes, &at):
                        return False
            elif role == COL_ACTION:
                if n and not _blank(s, n) and not _seen(&self.actions_seen, s, n, &action):
                    return False
            elif role == COL_SOURCE:
                if n and not _seen(&self.sources, s, n, &value):
                    return False
        self._store(number, scope, mask, at, action)
        return True

    cdef inline void _store(self, uint64_t number, int64_t scope, int64_t mask, int64_t at,
                            int64_t action) noexcept nogil:
        """A row loaded (there is room for it)."""
        if at > self.newest_at:  # of the rows loaded only: a rejected row's time is not news
            self.newest_at = at
        self.p_numbers[self.length] = number
        self.p_scopes[self.length] = <uint32_t>scope
        self.p_masks[self.length] = <uint8_t>mask
        if self.p_ats != NULL:
            self.p_ats[self.length] = at
        if self.p_actions != NULL:
            self.p_actions[self.length] = <uint8_t>action
        self.length += 1

    cdef void _record(self, const unsigned char *raw, Py_ssize_t raw_len, int fields):
        cdef int i, role
        cdef Py_ssize_t n
        cdef const unsigned char *s
        cdef uint64_t number = 0
        cdef int64_t scope = -1, mask = self.default_mask, value, at = 0, action = 1
        cdef size_t bad_at
        cdef object reason
        if self.stray_quote:
            self._reject(raw, raw_len, "", "text after a closing quote")
            return
        if fields != self.n_columns:
            self._reject(raw, raw_len, "", f"{fields} fields; the header has {self.n_columns}")
            return
        for i in range(fields):
            if memchr(self.fstart[i], 0, self.flen[i]) != NULL:
                self._reject(raw, raw_len, COLUMNS[self.roles[i]], "a NUL byte")
                return
        for i in range(fields):
            role = self.roles[i]
            s = self._field(i, &n)
            if role == COL_NUMBER:
                if _ascii(s, n):
                    if an_parse_number(s, n, self.default_cc, &number, &bad_at) != AN_NUM_OK:
                        self._reject(raw, raw_len, "number", self._number_reason(s, n))
                        return
                else:
                    reason = self._text_number(s, n, &number)
                    if reason is not None:
                        self._reject(raw, raw_len, "number", reason)
                        return
            elif role == COL_SENDER:
                if not an_strtab_get(&self.senders, s, n, &value):
                    value = self._resolve(&self.senders, self.resolve_sender, s, n)
                if value < 0:
                    self._reject(raw, raw_len, "sender", self.reasons[-value - 1])
                    return
                scope = value
            elif role == COL_CATEGORY:
                if n:
                    if not an_strtab_get(&self.categories, s, n, &value):
                        value = self._resolve(&self.categories, self.resolve_category, s, n)
                    if value < 0:
                        self._reject(raw, raw_len, "category", self.reasons[-value - 1])
                        return
                    mask = value
            elif role == COL_AT:
                if n and not _blank(s, n):
                    if not an_parse_time(s, n, self.offset_minutes, &at):
                        self._reject(raw, raw_len, "at", "is not a time (an ISO date-time or Unix seconds)")
                        return
            elif role == COL_ACTION:
                if n and not _blank(s, n):
                    if not an_strtab_get(&self.actions_seen, s, n, &value):
                        value = self._resolve(&self.actions_seen, self.resolve_action, s, n)
                    if value < 0:
                        self._reject(raw, raw_len, "action", self.reasons[-value - 1])
                        return
                    action = value
            elif role == COL_SOURCE:
                if n:
                    if not an_strtab_get(&self.sources, s, n, &value):
                        value = self._resolve(&self.sources, self.resolve_source, s, n)
                    if value < 0:
                        self._reject(raw, raw_len, "source", self.reasons[-value - 1])
                        return
        if self.length == self.capacity:
            self._grow()
        self._store(number, scope, mask, at, action)

    cdef int64_t _resolve(self, an_strtab *table, object resolve, const unsigned char *s,
                          Py_ssize_t n) except? -2:
        """A text seen for the first time: ask Python, remember the answer (or the reason)."""
        cdef int64_t value
        raw = bytes(s[:n])
        try:
            value = resolve(raw.decode("utf-8"))
        except UnicodeDecodeError:
            value = self._reason("is not valid UTF-8")
        except ValueError as exc:  # InvalidInput
            value = self._reason(_reason_text(exc))
        if an_strtab_put(table, s, n, value) < 0:
            raise MemoryError()
        return value

    cdef int64_t _reason(self, str text):
        self.reasons.append(text)
        return -len(self.reasons)

    cdef str _number_reason(self, const unsigned char *s, Py_ssize_t n):
        try:
            self.normalize_text_number(bytes(s[:n]).decode("ascii"))
        except ValueError as exc:
            return _reason_text(exc)
        return "is not a phone number"

    cdef object _text_number(self, const unsigned char *s, Py_ssize_t n, uint64_t *out):
        try:
            out[0] = self.normalize_text_number(bytes(s[:n]).decode("utf-8"))
        except UnicodeDecodeError:
            return "is not valid UTF-8"
        except ValueError as exc:
            return _reason_text(exc)
        return None


cdef inline bint _seen(an_strtab *table, const unsigned char *s, Py_ssize_t n,
                       int64_t *value) noexcept nogil:
    """A text seen before, and not refused: its value is put in `value` (else it may be
    overwritten all the same)."""
    return an_strtab_get(table, s, n, value) and value[0] >= 0


cdef inline bint _ascii(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] >= 0x80:
            return False
    return True


cdef inline bint _blank(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] != 32:
            return False
    return True


ACTIONS = {"opt_out": 1, "opt-out": 1, "optout": 1, "opt_in": 2, "opt-in": 2, "optin": 2,
           "reassign": 3}


def _action_code(str text):
    """A row's action: opt_out (the default), opt_in, or reassign; ValueError otherwise."""
    code = ACTIONS.get(text.strip().lower())
    if code is None:
        raise ValueError(f"action: {text!r} is not opt_out, opt_in or reassign")
    return code


def parse_time(const unsigned char[::1] text, int offset_minutes=480):
    """Unix milliseconds of an ISO 8601 or Unix time, or None."""
    cdef int64_t ms = 0
    if text.shape[0] == 0 or not an_parse_time(&text[0], text.shape[0], offset_minutes, &ms):
        return None
    return ms


cdef str _reason_text(object exc):
    """An InvalidInput message without its leading "field: " (the rejects file names it)."""
    text = str(exc)
    return text.partition(": ")[2] or text
