"""Random numbers that follow from a run's seed and a row's identity, not from a process's state.

A training row's augmentation must not depend on which Ray Data actor happens to process it, in
which batch, or after how many other rows: otherwise two runs of one config differ. So every
random number is a pure function of named integers (the run's seed, the pass, the source, the
row id ...): ``derive`` folds them into one 64-bit key, ``uniforms`` expands a key per row into as
many uniform numbers as a row needs. Both are SplitMix64 (Steele, Lea and Flood, 2014), a
counter-based generator whose outputs pass BigCrush; vectorized over rows in numpy uint64, which
wraps on overflow as the algorithm wants (docs/conventions.md, Seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on each element of ``x`` (uint64 array): a bijection of 64-bit
    integers whose outputs for consecutive inputs look independent."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        return z ^ (z >> np.uint64(31))


def derive(*parts: int | np.ndarray) -> np.ndarray:
    """One 64-bit key from integers, in order: ``derive(seed, pass, source)``. Each part is a
    Python int (any size, taken mod 2^64) or a uint64-compatible array; arrays broadcast, so
    ``derive(seed, pass, row_keys)`` gives one key per row. Returns a uint64 array (0-d for ints)."""
    key = np.uint64(0)
    for part in parts:
        value = np.asarray(part % (1 << 64) if isinstance(part, int) else part).astype(np.uint64)
        key = splitmix64(key ^ value)
    return np.asarray(key, np.uint64)


def derive_int(*parts: int) -> int:
    """``derive`` as a Python int below 2^63, for APIs that take a plain seed (torch, Ray Data's
    file shuffle, numpy's ``default_rng``)."""
    return int(derive(*parts)) & ((1 << 63) - 1)


def row_keys(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """(n,) uint64 FNV-1a hashes of the rows' ids (UTF-8), the same for an id whatever batch it
    arrives in: computed one byte column at a time over all rows, skipping the padding of the
    batch's fixed-width byte array."""
    encoded = np.char.encode(np.asarray(ids, dtype=str), "utf-8")
    n = len(encoded)
    width = max(encoded.dtype.itemsize, 1)
    columns = np.frombuffer(encoded.tobytes(), np.uint8).reshape(n, width).T
    h = np.full(n, _FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for byte in columns:  # per byte position (an id's length), never per row
            h = np.where(byte != 0, (h ^ byte.astype(np.uint64)) * _FNV_PRIME, h)
    return h


def uniforms(keys: np.ndarray, k: int) -> np.ndarray:
    """(n, k) float64 uniform numbers in [0, 1) from (n,) uint64 keys: the i-th number of a row is
    SplitMix64 of its key's i-th counter, so a row's numbers depend on its key alone."""
    keys = np.asarray(keys, np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        counters = keys + np.arange(1, k + 1, dtype=np.uint64)[None, :] * _GOLDEN
    return (splitmix64(counters) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
