"""A binary heap of candidate ids ordered by their probabilities, for the compiled drafters' best-first
trees (numba, inlined where called): the most probable first, ties to the lower id.

>>> import numpy as np
>>> prob, heap = np.array([0.2, 0.9, 0.5]), np.zeros(3, np.int64)
>>> n = 0
>>> for c in range(3):
...     n = heap_push(heap, n, prob, c)
>>> best, n = heap_pop(heap, n, prob); int(best), n
(1, 2)
"""
from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def heap_better(prob, a, b):
    """Candidate a comes out before b: higher probability, then the lower id (pushed earlier)."""
    return prob[a] > prob[b] or (prob[a] == prob[b] and a < b)


@njit(cache=True, inline="always")
def heap_push(heap, n_heap, prob, c):
    """Add candidate c to the binary heap of candidate ids heap[:n_heap]; returns the new size."""
    i = n_heap
    while i > 0 and heap_better(prob, c, heap[(i - 1) // 2]):
        heap[i] = heap[(i - 1) // 2]
        i = (i - 1) // 2
    heap[i] = c
    return n_heap + 1


@njit(cache=True, inline="always")
def heap_pop(heap, n_heap, prob):
    """(the best candidate of heap[:n_heap], the new size)."""
    best = heap[0]
    n_heap -= 1
    last = heap[n_heap]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n_heap:
            break
        if c + 1 < n_heap and heap_better(prob, heap[c + 1], heap[c]):
            c += 1
        if not heap_better(prob, heap[c], last):
            break
        heap[i] = heap[c]
        i = c
    heap[i] = last
    return best, n_heap
