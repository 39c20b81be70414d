# The statements of a folding load resolved per key (included by _index.pyx).
#
# A load folds upstream's rows and anning's events (SPEC §5): for one (number, scope, category
# bit) the latest statement wins, an opt-out over an opt-in at the same time, once every
# statement of the number older than its latest reassignment is dropped. The rows come ordered
# by number, the events as statements (a bit a row) ordered by number - made while the rows
# were parsed - so one merge visits each number once and sorts only its few
# statements: no sort of them all. What it gives is what the new list is made of: the entries
# (number, scope, mask, latest time) for the build, and the statement tables (anning.index.
# statements) ordered by (number, scope, bit) as they are kept.

cdef enum:
    _SAID_OPT_OUT = 1
    _SAID_OPT_IN = 2
    _SAID_REASSIGN = 3
    _SAID_SHORT = 24    # a number's statements up to this many: insertion sort, else qsort


cdef extern from *:
    int __builtin_popcount(unsigned int x) nogil


cdef struct Said:
    uint64_t key        # scope << 8 | bit
    int64_t at
    uint8_t kind


cdef packed struct KeyRecord:     # anning.index.statements.KEY_DTYPE
    uint64_t number
    uint32_t scope
    uint8_t bit
    int64_t at


cdef packed struct MoveRecord:    # anning.index.statements.MOVE_DTYPE
    uint64_t number
    int64_t at


cdef int _said_order(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const Said *>a).key, y = (<const Said *>b).key
    return (x > y) - (x < y)


cdef inline void _said_sort(Said *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef Said x
    if n > _SAID_SHORT:
        qsort(s, n, sizeof(Said), _said_order)
        return
    for i in range(1, n):
        x = s[i]
        j = i
        while j > 0 and s[j - 1].key > x.key:
            s[j] = s[j - 1]
            j -= 1
        s[j] = x


cdef struct FoldInput:
    # the rows, ordered by number (times NULL: every row as of `as_of`; actions NULL: every
    # row an opt-out)
    const uint64_t *row_number
    const uint32_t *row_scope
    const uint8_t *row_mask
    const int64_t *row_at
    const uint8_t *row_action
    Py_ssize_t rows
    int64_t as_of
    # the events' statements, ordered by number
    const uint64_t *number
    const uint32_t *scope
    const uint8_t *bit
    const int64_t *at
    const uint8_t *kind
    Py_ssize_t n


cdef struct FoldOutput:
    uint64_t *entry_number
    uint32_t *entry_scope
    uint8_t *entry_mask
    int64_t *entry_at
    KeyRecord *bit_times
    KeyRecord *tombstones
    MoveRecord *moves
    Py_ssize_t entries, times, ins, moved
    bint timed          # bit_times: the bits of entries whose bits differ in time (else those
                        # not as of `as_of`)


cdef inline Py_ssize_t _row_said(const FoldInput *f, Py_ssize_t row, Said *out,
                                 Py_ssize_t k) noexcept nogil:
    """Append row `row`'s statements (a bit each; a reassignment one) to out[k:]."""
    cdef uint8_t action = f.row_action[row] if f.row_action != NULL else _SAID_OPT_OUT
    cdef int64_t at = f.row_at[row] if f.row_at != NULL else f.as_of
    cdef uint8_t mask = f.row_mask[row]
    cdef int b
    if action == _SAID_REASSIGN:
        out[k].key, out[k].at, out[k].kind = 0, at, action
        return k + 1
    for b in range(8):
        if mask >> b & 1:
            out[k].key = (<uint64_t>f.row_scope[row] << 8) | b
            out[k].at, out[k].kind = at, action
            k += 1
    return k


cdef inline void _emit(const FoldInput *f, FoldOutput *o, uint64_t number, Said *won,
                       Py_ssize_t w) noexcept nogil:
    """A number's winners (ordered by scope and bit) as entries and statement records."""
    cdef Py_ssize_t x = 0, y, first
    cdef uint8_t mask
    cdef int64_t latest = 0, first_at = 0
    cdef bint differ
    cdef uint64_t scope
    while x < w:
        # a scope's winners: its opt-in bits tombstones, its opt-out bits one entry
        first, scope, mask, differ = x, won[x].key >> 8, 0, False
        while x < w and (won[x].key >> 8) == scope:
            if won[x].kind != _SAID_OPT_OUT:
                o.tombstones[o.ins].number, o.tombstones[o.ins].scope = number, scope
                o.tombstones[o.ins].bit = won[x].key & 0xFF
                o.tombstones[o.ins].at = won[x].at
                o.ins += 1
            elif not mask:
                mask, latest, first_at = <uint8_t>(1 << (won[x].key & 0xFF)), won[x].at, \
                    won[x].at
            else:
                mask |= <uint8_t>(1 << (won[x].key & 0xFF))
                differ = differ or won[x].at != first_at
                if won[x].at > latest:
                    latest = won[x].at
            x += 1
        if not mask:
            continue
        o.entry_number[o.entries], o.entry_scope[o.entries] = number, scope
        o.entry_mask[o.entries], o.entry_at[o.entries] = mask, latest
        o.entries += 1
        for y in range(first, x):
            if won[y].kind == _SAID_OPT_OUT and (differ if o.timed else won[y].at != f.as_of):
                o.bit_times[o.times].number = number
                o.bit_times[o.times].scope = scope
                o.bit_times[o.times].bit = won[y].key & 0xFF
                o.bit_times[o.times].at = won[y].at
                o.times += 1


cdef int _fold_numbers(const FoldInput *f, FoldOutput *o) noexcept nogil:
    """The merge; 0, -1 out of memory, or 1 + the position of a statement out of order."""
    cdef Py_ssize_t i = 0, j = 0, i_end, j_end, k, n, x, w, capacity = 64, best
    cdef Said *said = <Said *>malloc(capacity * sizeof(Said))
    cdef Said *grown
    cdef uint64_t number, last = 0
    cdef int64_t cut
    cdef bint moved
    if said == NULL:
        return -1
    while i < f.rows or j < f.n:
        if j >= f.n or (i < f.rows and f.row_number[i] <= f.number[j]):
            number = f.row_number[i]
        else:
            number = f.number[j]
        if number < last:
            free(said)
            return 1 + i + j
        last = number
        i_end = i
        while i_end < f.rows and f.row_number[i_end] == number:
            i_end += 1
        j_end = j
        while j_end < f.n and f.number[j_end] == number:
            j_end += 1
        n = 8 * (i_end - i) + (j_end - j)  # (at most)
        if n > capacity:
            grown = <Said *>realloc(said, 2 * n * sizeof(Said))
            if grown == NULL:
                free(said)
                return -1
            said, capacity = grown, 2 * n
        k = 0
        for x in range(i, i_end):
            k = _row_said(f, x, said, k)
        for x in range(j, j_end):
            said[k].key = (<uint64_t>f.scope[x] << 8) | f.bit[x]
            said[k].at, said[k].kind = f.at[x], f.kind[x]
            k += 1
        i, j = i_end, j_end
        # the latest reassignment cuts off every statement older than it
        moved, cut = False, 0
        for x in range(k):
            if said[x].kind == _SAID_REASSIGN and (not moved or said[x].at > cut):
                moved, cut = True, said[x].at
        if moved:
            o.moves[o.moved].number, o.moves[o.moved].at = number, cut
            o.moved += 1
        n, k = k, 0
        for x in range(n):
            if said[x].kind != _SAID_REASSIGN and (not moved or said[x].at >= cut):
                said[k] = said[x]
                k += 1
        _said_sort(said, k)
        # each key's run: the greatest (at, opt-out) wins; the winners move to the front
        x, w = 0, 0
        while x < k:
            best = x
            x += 1
            while x < k and said[x].key == said[best].key:
                if said[x].at > said[best].at or (said[x].at == said[best].at and
                                                  said[x].kind == _SAID_OPT_OUT):
                    best = x
                x += 1
            said[w] = said[best]
            w += 1
        _emit(f, o, number, said, w)
    free(said)
    return 0


def _layout(dtype, tuple names):
    """(offset, size) of each named field of a packed record dtype; None if it is not one."""
    fields = getattr(dtype, "fields", None) or {}
    if set(fields) != set(names) or dtype.itemsize != sum(fields[n][0].itemsize for n in names):
        return None
    return [(fields[n][1], fields[n][0].itemsize) for n in names]


def fold_statements(tuple rows, int64_t as_of, tuple events, bint timed, key_dtype,
                    move_dtype):
    """Resolve `rows` = (numbers, scope ids, masks, times or None, actions or None) with
    `events` = (number, scope, bit, at, kind) statements, each ordered by number (the rows
    gathered so before: read here by position at random, they cost four times as much); kind
    and action 1 opt-out, 2 opt-in, 3 reassignment (its scope and mask not read). A row without
    times is as of `as_of`.

    Returns (entries, bit_times, tombstones, reassigned): the opt-out winners as entries
    (number, scope, mask, at: the latest of its bits); the bit times (KEY_DTYPE records) of
    entries whose bits differ in time if `timed`, else of every winning bit not as of
    `as_of`; the opt-in winners (KEY_DTYPE), and each reassigned number's latest reassignment
    (MOVE_DTYPE), all ordered by number, scope and bit. The GIL is released throughout;
    ValueError names a statement out of number order.
    `key_dtype` and `move_dtype` are the records' (anning.index.statements owns them)."""
    if _layout(key_dtype, ("number", "scope", "bit", "at")) != [(0, 8), (8, 4), (12, 1), (13, 8)] \
            or _layout(move_dtype, ("number", "at")) != [(0, 8), (8, 8)]:
        raise ValueError(f"key_dtype {key_dtype} and move_dtype {move_dtype} are not the "
                         "records this fold writes")
    cdef const uint64_t[::1] row_number = rows[0]
    cdef const uint32_t[::1] row_scope = rows[1]
    cdef const uint8_t[::1] row_mask = rows[2]
    cdef const int64_t[::1] row_at
    cdef const uint8_t[::1] row_action
    cdef const uint64_t[::1] number = events[0]
    cdef const uint32_t[::1] scope = events[1]
    cdef const uint8_t[::1] bit = events[2]
    cdef const int64_t[::1] at = events[3]
    cdef const uint8_t[::1] kind = events[4]
    cdef FoldInput f
    cdef Py_ssize_t x, statements = 0
    f.rows, f.n, f.as_of = row_number.shape[0], number.shape[0], as_of
    if row_scope.shape[0] != f.rows or row_mask.shape[0] != f.rows:
        raise ValueError(f"rows: columns of {f.rows}, {row_scope.shape[0]}, "
                         f"{row_mask.shape[0]} rows")
    if scope.shape[0] != f.n or bit.shape[0] != f.n or at.shape[0] != f.n \
            or kind.shape[0] != f.n:
        raise ValueError(f"events: columns of {f.n}, {scope.shape[0]}, {bit.shape[0]}, "
                         f"{at.shape[0]}, {kind.shape[0]} statements")
    f.row_number = &row_number[0] if f.rows else NULL
    f.row_scope = &row_scope[0] if f.rows else NULL
    f.row_mask = &row_mask[0] if f.rows else NULL
    f.row_at = NULL
    f.row_action = NULL
    if rows[3] is not None:
        row_at = rows[3]
        if row_at.shape[0] != f.rows:
            raise ValueError(f"rows: {row_at.shape[0]} times for {f.rows} rows")
        f.row_at = &row_at[0] if f.rows else NULL
    if rows[4] is not None:
        row_action = rows[4]
        if row_action.shape[0] != f.rows:
            raise ValueError(f"rows: {row_action.shape[0]} actions for {f.rows} rows")
        f.row_action = &row_action[0] if f.rows else NULL
    f.number = &number[0] if f.n else NULL
    f.scope = &scope[0] if f.n else NULL
    f.bit = &bit[0] if f.n else NULL
    f.at = &at[0] if f.n else NULL
    f.kind = &kind[0] if f.n else NULL
    with nogil:
        for x in range(f.rows):
            statements += 1 if f.row_action != NULL and f.row_action[x] == _SAID_REASSIGN \
                else __builtin_popcount(f.row_mask[x])
    statements += f.n
    # room for the most each can hold; what is left over is given back below
    entries = (np.empty(statements, np.uint64), np.empty(statements, np.uint32),
               np.empty(statements, np.uint8), np.empty(statements, np.int64))
    bit_times = np.empty(statements, key_dtype)
    tombstones = np.empty(statements, key_dtype)
    reassigned = np.empty(f.rows + f.n, move_dtype)
    cdef uint64_t[::1] e_number = entries[0]
    cdef uint32_t[::1] e_scope = entries[1]
    cdef uint8_t[::1] e_mask = entries[2]
    cdef int64_t[::1] e_at = entries[3]
    cdef FoldOutput o
    o.entry_number = &e_number[0] if statements else NULL
    o.entry_scope = &e_scope[0] if statements else NULL
    o.entry_mask = &e_mask[0] if statements else NULL
    o.entry_at = &e_at[0] if statements else NULL
    o.bit_times = <KeyRecord *>cnp.PyArray_DATA(bit_times)
    o.tombstones = <KeyRecord *>cnp.PyArray_DATA(tombstones)
    o.moves = <MoveRecord *>cnp.PyArray_DATA(reassigned)
    o.entries = o.times = o.ins = o.moved = 0
    o.timed = timed
    cdef int status
    with nogil:
        status = _fold_numbers(&f, &o)
    if status < 0:
        raise MemoryError()
    if status > 0:
        raise ValueError(f"statements out of number order at statement {status - 1}")
    # (the views released before the arrays shrink in place)
    e_number = None
    e_scope = None
    e_mask = None
    e_at = None
    for column in entries:
        column.resize(o.entries, refcheck=False)
    bit_times.resize(o.times, refcheck=False)
    tombstones.resize(o.ins, refcheck=False)
    reassigned.resize(o.moved, refcheck=False)
    return entries, bit_times, tombstones, reassigned
