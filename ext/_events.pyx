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
from libc.stdint cimport uint8_t, uint64_t

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
