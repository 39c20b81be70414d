# Declarations of ext/number.h (E.164 normalisation in C), shared by the Cython modules.
from libc.stdint cimport uint64_t

cdef extern from "number.h" nogil:
    enum:
        AN_NUM_OK
        AN_NUM_EMPTY
        AN_NUM_BAD_CHAR
        AN_NUM_LONE_PLUS
        AN_NUM_MISPLACED_PLUS
        AN_NUM_TOO_SHORT
        AN_NUM_TOO_LONG
        AN_NUM_UNKNOWN_COUNTRY
        AN_NUM_BAD_LENGTH
        AN_NUM_NOT_CN
    const unsigned long long AN_NUMBER_LIMIT
    int an_parse_number(const unsigned char *s, size_t length, int default_cc,
                        uint64_t *out, size_t *bad_at)
    int an_check_e164(uint64_t value)
    const char *AN_COUNTRY_TABLE_VERSION
