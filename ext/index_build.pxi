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


def build(const uint64_t[::1] numbers, const uint32_t[::1] scopes, const uint8_t[::1] masks,
          int scope_bits, double bloom_bits_per_entry=10.0, bint validate=True,
          allocate=None, const int64_t[::1] times=None):
    """Build the arrays of an index from entries (number, scope id, category mask).

    Duplicate (number, scope) entries are folded, their masks OR-ed. Returns a dict of the
    arrays and parameters; raises ValueError naming the first bad entry. `allocate(n, dtype)`
    (np.zeros by default) gives the arrays checks probe at random: the caller picks the memory.
    With `times` (Unix ms per entry), the dict also holds `times` (per folded entry, the latest)
    and `mixed` (1 where the folded rows' times differ)."""
    cdef Py_ssize_t n = numbers.shape[0], i, b, lo, hi, out_pos, k
    if scopes.shape[0] != n or masks.shape[0] != n:
        raise ValueError(f"numbers, scopes and masks differ in length: "
                         f"{n}, {scopes.shape[0]}, {masks.shape[0]}")
    if times is not None and times.shape[0] != n:
        raise ValueError(f"times: {times.shape[0]} for {n} entries")
    if n > MAX_ENTRIES:
        raise ValueError(f"entries: {n} is more than an index holds ({MAX_ENTRIES})")
    if scope_bits < 1 or scope_bits > 31:
        raise ValueError(f"scope_bits: {scope_bits} is outside 1..31")
    cdef int d = directory_bits(n, scope_bits)
    cdef int remainder_bits = AN_NUMBER_BITS - d
    cdef int shift = scope_bits + 8
    cdef uint64_t remainder_mask = (1ULL << remainder_bits) - 1
    cdef uint64_t buckets = 1ULL << d
    cdef Py_ssize_t bad = -1
    cdef int why = 0
    cdef uint64_t h, scope_limit = 1ULL << scope_bits

    with nogil:
        for i in range(n):
            if numbers[i] == 0 or numbers[i] >= AN_NUMBER_LIMIT or (
                    validate and an_check_e164(numbers[i]) != AN_NUM_OK):
                bad = i
                why = 1
                break
            if scopes[i] >= scope_limit:
                bad = i
                why = 2
                break
            if masks[i] == 0:
                bad = i
                why = 3
                break
    if bad >= 0:
        value = (numbers[bad], scopes[bad], masks[bad])[why - 1]
        what = ("is not an E.164 number", f"is not below 2^{scope_bits}",
                "is an empty category mask")[why - 1]
        field = ("numbers", "scopes", "masks")[why - 1]
        raise ValueError(f"{field}[{bad}]: {value} {what}")

    allocate = allocate or np.zeros
    directory_arr = allocate(buckets + 1, np.uint32)
    cursor_arr = np.empty(buckets, dtype=np.uint32)
    words_arr = np.empty(n, dtype=np.uint64)
    cdef bint timed = times is not None
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
        for i in range(n):
            directory[(an_perm50(numbers[i]) >> remainder_bits) + 1] += 1
        for b in range(<Py_ssize_t>buckets):
            directory[b + 1] += directory[b]
            cursor[b] = directory[b]
        for i in range(n):
            h = an_perm50(numbers[i])
            b = h >> remainder_bits
            words[cursor[b]] = ((h & remainder_mask) << shift) | (
                <uint64_t>scopes[i] << 8) | masks[i]
            if timed:
                times_out[cursor[b]] = times[i]
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
