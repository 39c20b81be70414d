# Declarations of ext/strtab.h (byte string -> int64 hash table), shared by the Cython modules.
from libc.stdint cimport int64_t

cdef extern from "strtab.h" nogil:
    ctypedef struct an_strtab:
        size_t count
    int an_strtab_init(an_strtab *t, size_t capacity)
    void an_strtab_free(an_strtab *t)
    int an_strtab_get(const an_strtab *t, const unsigned char *s, size_t n, int64_t *value)
    int an_strtab_put(an_strtab *t, const unsigned char *s, size_t n, int64_t value)
