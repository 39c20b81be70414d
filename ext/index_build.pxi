# Building an index's arrays from entries (included by _index.pyx).
#
# A counting sort on the bucket (the top bits of the permuted number) places the entries and
# yields the directory; each bucket is then sorted and its duplicate (number, scope) entries
# folded. An optional payload of times (one int64 per entry, Unix ms) travels with the entries:
# a folded entry keeps the latest of its rows' times, and is flagged when its rows' times differ
# (the caller then works out the time of each category bit).

from libc.stdlib cimport free, malloc


cdef struct TimedWord:
    uint64_t word
    int64_t time


cdef int sort_words(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *>a)[0], y = (<const uint64_t *>b)[0]
    return (x > y) - (x < y)


cdef inline void sort_bucket(uint64_t *w, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef uint64_t x
    if n > 32:
        qsort(w, n, sizeof(uint64_t), sort_words)
        return
    for i in range(1, n):
        x = w[i]
        j = i
        while j > 0 and w[j - 1] > x:
            w[j] = w[j - 1]
            j -= 1
        w[j] = x


cdef int sort_timed(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const TimedWord *>a).word, y = (<const TimedWord *>b).word
    return (x > y) - (x < y)


cdef inline int sort_bucket_timed(uint64_t *w, int64_t *t, Py_ssize_t n) noexcept nogil:
    """Sort words with their times; 0, or -1 when out of memory."""
    cdef Py_ssize_t i, j
    cdef uint64_t x
    cdef int64_t y
    cdef TimedWord *pairs
    if n > 32:
        pairs = <TimedWord *>malloc(n * sizeof(TimedWord))
        if pairs == NULL:
            return -1
        for i in range(n):
            pairs[i].word = w[i]
            pairs[i].time = t[i]
        qsort(pairs, n, sizeof(TimedWord), sort_timed)
        for i in range(n):
            w[i] = pairs[i].word
            t[i] = pairs[i].time
        free(pairs)
        return 0
    for i in range(1, n):
        x = w[i]
        y = t[i]
        j = i
        while j > 0 and w[j - 1] > x:
            w[j] = w[j - 1]
            t[j] = t[j - 1]
            j -= 1
        w[j] = x
        t[j] = y
    return 0


def directory_bits(Py_ssize_t entries, int scope_bits):
    """Directory size: about 4-8 entries per bucket, and enough bits that remainder, scope and
    mask fit one 64-bit word."""
    cdef int d = 0
    while (entries >> (d + 3)) > 0 and d < 32:
        d += 1
    return max(d, AN_NUMBER_BITS + scope_bits + 8 - 64)


cdef struct EntrySource:
    # entries to build from: n rows of columns, those with keep[i] == 0 left out (keep NULL:
    # every row); times NULL when the build keeps none
    const uint64_t *numbers
    const uint32_t *scopes
    const uint8_t *masks
    const int64_t *times
    const uint8_t *keep
    Py_ssize_t n


cdef int _entry_source(EntrySource *src, object numbers, object scopes, object masks,
                       object times, object keep, bint timed, str name) except -1:
    # The views only check the columns and find their data: the caller's arrays hold it for
    # the build (none is resized meanwhile).
    cdef const uint64_t[::1] nv = numbers
    cdef const uint32_t[::1] sv = scopes
    cdef const uint8_t[::1] mv = masks
    cdef const int64_t[::1] tv
    cdef const uint8_t[::1] kv
    src.n = nv.shape[0]
    if sv.shape[0] != src.n or mv.shape[0] != src.n:
        raise ValueError(f"{name}numbers, scopes and masks differ in length: "
                         f"{src.n}, {sv.shape[0]}, {mv.shape[0]}")
    src.numbers = &nv[0] if src.n else NULL
    src.scopes = &sv[0] if src.n else NULL
    src.masks = &mv[0] if src.n else NULL
    src.times = NULL
    src.keep = NULL
    if timed:
        if times is None:
            raise ValueError(f"{name}times: none, where the other entries have them")
        tv = times
        if tv.shape[0] != src.n:
            raise ValueError(f"{name}times: {tv.shape[0]} for {src.n} entries")
        src.times = &tv[0] if src.n else NULL
    if keep is not None:
        kv = keep
        if kv.shape[0] != src.n:
            raise ValueError(f"keep: {kv.shape[0]} for {src.n} entries")
        src.keep = &kv[0] if src.n else NULL
    return 0


def build(numbers, scopes, masks, int scope_bits, double bloom_bits_per_entry=10.0,
          bint validate=True, allocate=None, times=None, keep=None, tuple more=None):
    """Build the arrays of an index from entries (number, scope id, category mask).

    Duplicate (number, scope) entries are folded, their masks OR-ed. Returns a dict of the
    arrays and parameters; raises ValueError naming the first bad entry. `allocate(n, dtype)`
    (np.zeros by default) gives the arrays checks probe at random: the caller picks the memory.
    With `times` (Unix ms per entry), the dict also holds `times` (per folded entry, the latest)
    and `mixed` (1 where the folded rows' times differ). `keep` (uint8 per entry) leaves out the
    entries where it is 0, and `more` = (numbers, scopes, masks[, times]) adds entries: a
    folding load's rows and its resolved entries, without a copy of them all together."""
    cdef bint timed = times is not None
    cdef EntrySource sources[2]
    _entry_source(&sources[0], numbers, scopes, masks, times, keep, timed, "")
    if more is not None:
        if len(more) not in (3, 4):
            raise ValueError(f"more: {len(more)} columns, not numbers, scopes, masks[, times]")
        _entry_source(&sources[1], more[0], more[1], more[2],
                      more[3] if len(more) == 4 else None, None, timed, "more: ")
    else:
        sources[1].n = 0
    cdef Py_ssize_t n = 0, i, b, lo, hi, out_pos, k, s
    with nogil:
        for s in range(2):
            if sources[s].keep == NULL:
                n += sources[s].n
                continue
            for i in range(sources[s].n):
                n += sources[s].keep[i] != 0
    if n > MAX_ENTRIES:
        raise ValueError(f"entries: {n} is more than an index holds ({MAX_ENTRIES})")
    if scope_bits < 1 or scope_bits > 31:
        raise ValueError(f"scope_bits: {scope_bits} is outside 1..31")
    cdef int d = directory_bits(n, scope_bits)
    cdef int remainder_bits = AN_NUMBER_BITS - d
    cdef int shift = scope_bits + 8
    cdef uint64_t remainder_mask = (1ULL << remainder_bits) - 1
    cdef uint64_t buckets = 1ULL << d
    cdef Py_ssize_t bad = -1, bad_source = 0
    cdef int why = 0
    cdef uint64_t h, scope_limit = 1ULL << scope_bits
    cdef const EntrySource *src

    with nogil:
        for s in range(2):
            src = &sources[s]
            for i in range(src.n):
                if src.keep != NULL and not src.keep[i]:
                    continue
                if src.numbers[i] == 0 or src.numbers[i] >= AN_NUMBER_LIMIT or (
                        validate and an_check_e164(src.numbers[i]) != AN_NUM_OK):
                    why = 1
                elif src.scopes[i] >= scope_limit:
                    why = 2
                elif src.masks[i] == 0:
                    why = 3
                if why:
                    bad, bad_source = i, s
                    break
            if why:
                break
    if bad >= 0:
        src = &sources[bad_source]
        value = (src.numbers[bad], src.scopes[bad], src.masks[bad])[why - 1]
        what = ("is not an E.164 number", f"is not below 2^{scope_bits}",
                "is an empty category mask")[why - 1]
        field = ("numbers", "scopes", "masks")[why - 1]
        raise ValueError(f"{'more: ' if bad_source else ''}{field}[{bad}]: {value} {what}")

    allocate = allocate or np.zeros
    directory_arr = allocate(buckets + 1, np.uint32)
    cursor_arr = allocate(buckets, np.uint32)  # probed at random too: huge pages help
    words_arr = np.empty(n, dtype=np.uint64)
    times_arr = np.empty(n if timed else 0, dtype=np.int64)
    mixed_arr = np.zeros(n if timed else 0, dtype=np.uint8)
    cdef uint32_t[::1] directory = directory_arr
    cdef uint32_t[::1] cursor = cursor_arr
    cdef uint64_t[::1] words = words_arr
    cdef int64_t[::1] times_out = times_arr
    cdef uint8_t[::1] mixed = mixed_arr
    cdef uint64_t word
    cdef int64_t t
    cdef uint8_t differ
    cdef int failed = 0
    with nogil:
        # Counting sort on the bucket (top bits), which also yields the directory.
        for s in range(2):
            src = &sources[s]
            for i in range(src.n):
                if src.keep == NULL or src.keep[i]:
                    directory[(an_perm50(src.numbers[i]) >> remainder_bits) + 1] += 1
        for b in range(<Py_ssize_t>buckets):
            directory[b + 1] += directory[b]
            cursor[b] = directory[b]
        for s in range(2):
            src = &sources[s]
            for i in range(src.n):
                if src.keep != NULL and not src.keep[i]:
                    continue
                h = an_perm50(src.numbers[i])
                b = h >> remainder_bits
                words[cursor[b]] = ((h & remainder_mask) << shift) | (
                    <uint64_t>src.scopes[i] << 8) | src.masks[i]
                if timed:
                    times_out[cursor[b]] = src.times[i]
                cursor[b] += 1
        # Sort each bucket, fold duplicates, compact in place.
        out_pos = 0
        lo = 0
        for b in range(<Py_ssize_t>buckets):
            hi = directory[b + 1]
            if timed:
                if sort_bucket_timed(&words[lo], &times_out[lo], hi - lo) < 0:
                    failed = 1
                    break
            else:
                sort_bucket(&words[lo], hi - lo)
            directory[b] = out_pos
            k = lo
            while k < hi:
                word = words[k]
                t = times_out[k] if timed else 0
                differ = 0
                k += 1
                while k < hi and (words[k] >> 8) == (word >> 8):
                    word |= words[k] & 0xFF
                    if timed and times_out[k] != t:
                        differ = 1
                        if times_out[k] > t:
                            t = times_out[k]
                    k += 1
                words[out_pos] = word
                if timed:
                    times_out[out_pos] = t
                    mixed[out_pos] = differ
                out_pos += 1
            lo = hi
        if not failed:
            directory[buckets] = out_pos
    if failed:
        raise MemoryError("building an index: no memory to sort a bucket")
    # Release the buffer views before resizing in place (no copy of the entries).
    cursor = None
    cursor_arr = None
    words = None
    times_out = None
    mixed = None
    if out_pos < n:
        words_arr.resize(out_pos, refcheck=False)
        if timed:
            times_arr.resize(out_pos, refcheck=False)
            mixed_arr.resize(out_pos, refcheck=False)
    bloom_arr = build_bloom(directory_arr, words_arr, remainder_bits, scope_bits,
                            bloom_bits_per_entry, allocate)
    out = {
        "directory": directory_arr,
        "words": words_arr,
        "bloom": bloom_arr,
        "remainder_bits": remainder_bits,
        "scope_bits": scope_bits,
        "bloom_k": BLOOM_K,
    }
    if timed:
        out["times"] = times_arr
        out["mixed"] = mixed_arr
    return out
