"""Integer value ranges (intervals) through index arithmetic.

A data-dependent index (``argmax``, ``argmax // 2``, a clamped cast) is not a known value, but
it is *bounded*. Rules carry elementwise bounds ``lo <= value <= hi`` on integer and boolean
abstract arrays (``AbstractArray.lo`` / ``.hi``, float64 with ``±inf`` for unbounded), so that
``dynamic_slice``, ``dynamic_update_slice``, ``gather``, ``scatter`` and ``cond`` can take the
union over the few values an index can reach instead of "anything" (asdex does the same).

Comparisons whose outcome the bounds decide become known (``lt(argmax, 0)`` is ``False``), which
is what removes jnp's negative-index normalisation from the picture.
"""

from __future__ import annotations

import numpy as np

from . import _abstract as ab

_INF = np.inf
# Bounds are float64: indices up to 2**53 are represented exactly.


def bounds(a: ab.AbstractArray):
    """``(lo, hi)`` float64 arrays of ``a.shape`` valid for every input."""
    shape = a.shape
    if a.value is not None:
        try:
            v = np.asarray(a.value, dtype=np.float64)
            return np.broadcast_to(v, shape), np.broadcast_to(v, shape)
        except (TypeError, ValueError):
            pass
    if a.lo is not None:
        return np.broadcast_to(a.lo, shape), np.broadcast_to(a.hi, shape)
    if a.dtype == np.bool_:
        return np.zeros(shape), np.ones(shape)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.full(shape, float(info.min)), np.full(shape, float(info.max))
    return np.full(shape, -_INF), np.full(shape, _INF)


def finite(a: ab.AbstractArray, max_width: float | None = None) -> bool:
    """Are ``a``'s bounds finite (and no wider than ``max_width``)?"""
    if np.issubdtype(a.dtype, np.inexact):
        return False
    lo, hi = bounds(a)
    if a.lo is None and a.value is None and a.dtype != np.bool_:
        return False
    ok = bool(np.isfinite(lo).all() and np.isfinite(hi).all())
    if ok and max_width is not None and lo.size:
        ok = float((hi - lo).max()) <= max_width
    return ok


def bounded(shape, dtype, lo, hi) -> ab.AbstractArray:
    """An integer/boolean abstract array with these bounds (a known value when they meet)."""
    dtype = np.dtype(dtype)
    lo = np.broadcast_to(np.asarray(lo, np.float64), shape)
    hi = np.broadcast_to(np.asarray(hi, np.float64), shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = np.maximum(lo, info.min), np.minimum(hi, info.max)
    elif dtype == np.bool_:
        lo, hi = np.maximum(lo, 0), np.minimum(hi, 1)
    if lo.size and bool((lo == hi).all()) and np.isfinite(lo).all():
        return ab.known(lo.astype(dtype))
    out = ab.unknown(shape, dtype)
    if np.isfinite(lo).any() or np.isfinite(hi).any():
        out.lo, out.hi = np.array(lo), np.array(hi)
    return out


def _extremes(*cands):
    stacked = np.stack(np.broadcast_arrays(*cands))
    with np.errstate(invalid="ignore"):
        lo = np.nanmin(stacked, axis=0) if np.isnan(stacked).any() else stacked.min(axis=0)
        hi = np.nanmax(stacked, axis=0) if np.isnan(stacked).any() else stacked.max(axis=0)
    return lo, hi


def _mul(a, b):
    (al, ah), (bl, bh) = a, b
    with np.errstate(invalid="ignore"):
        c = [al * bl, al * bh, ah * bl, ah * bh]
    c = [np.where(np.isnan(x), 0.0, x) for x in c]  # 0 * inf
    return _extremes(*c)


def _div(a, b):
    """C-style integer division (lax.div truncates toward zero)."""
    (al, ah), (bl, bh) = a, b
    if ((bl <= 0) & (bh >= 0)).any():
        return None  # divisor may be zero
    with np.errstate(invalid="ignore", divide="ignore"):
        c = [np.trunc(x / y) for x in (al, ah) for y in (bl, bh)]
    c = [np.where(np.isnan(x), 0.0, x) for x in c]
    return _extremes(*c)


def _rem(a, b):
    (al, ah), (bl, bh) = a, b
    m = np.maximum(np.abs(bl), np.abs(bh)) - 1
    lo = np.where(al >= 0, 0.0, np.maximum(al, -m))
    hi = np.where(ah <= 0, 0.0, np.minimum(ah, m))
    return lo, hi


def _compare(name, a, b):
    (al, ah), (bl, bh) = a, b
    true = {"lt": ah < bl, "le": ah <= bl, "gt": al > bh, "ge": al >= bh,
            "eq": (al == ah) & (bl == bh) & (al == bl), "ne": (ah < bl) | (al > bh)}[name]
    false = {"lt": al >= bh, "le": al > bh, "gt": ah <= bl, "ge": ah < bl,
             "eq": (ah < bl) | (al > bh), "ne": (al == ah) & (bl == bh) & (al == bl)}[name]
    return np.where(false, 0.0, 0.0) + np.where(true, 1.0, 0.0), np.where(false, 0.0, 1.0)


def evaluate(name: str, ins, out_shape, out_dtype, params=None):
    """Bounds of an elementwise integer/boolean primitive's output, or ``None``."""
    bs = [tuple(np.broadcast_to(x, out_shape) for x in bounds(a)) for a in ins]
    r = None
    if name in ("add", "add_any"):
        r = (bs[0][0] + bs[1][0], bs[0][1] + bs[1][1])
    elif name == "sub":
        r = (bs[0][0] - bs[1][1], bs[0][1] - bs[1][0])
    elif name == "neg":
        r = (-bs[0][1], -bs[0][0])
    elif name == "mul":
        r = _mul(bs[0], bs[1])
    elif name == "div":
        r = _div(bs[0], bs[1])
    elif name == "rem":
        r = _rem(bs[0], bs[1])
    elif name == "max":
        r = (np.maximum(bs[0][0], bs[1][0]), np.maximum(bs[0][1], bs[1][1]))
    elif name == "min":
        r = (np.minimum(bs[0][0], bs[1][0]), np.minimum(bs[0][1], bs[1][1]))
    elif name == "clamp":  # clamp(lo, x, hi) = min(max(x, lo), hi)
        (ll, lh), (xl, xh), (hl, hh) = bs
        m = (np.maximum(xl, ll), np.maximum(xh, lh))
        r = (np.minimum(m[0], hl), np.minimum(m[1], hh))
    elif name == "abs":
        (l, h) = bs[0]
        r = (np.where((l <= 0) & (h >= 0), 0.0, np.minimum(np.abs(l), np.abs(h))),
             np.maximum(np.abs(l), np.abs(h)))
    elif name == "sign":
        r = (np.sign(bs[0][0]), np.sign(bs[0][1]))
    elif name in ("convert_element_type", "copy", "copy_p", "reduce_precision"):
        if np.issubdtype(ins[0].dtype, np.inexact):
            return None
        r = bs[0]
    elif name in ("lt", "le", "gt", "ge", "eq", "ne"):
        r = _compare(name, bs[0], bs[1])
    elif name in ("and", "or", "not") and out_dtype == np.bool_:
        if name == "not":
            r = (1 - bs[0][1], 1 - bs[0][0])
        elif name == "and":
            r = (np.minimum(bs[0][0], bs[1][0]), np.minimum(bs[0][1], bs[1][1]))
        else:
            r = (np.maximum(bs[0][0], bs[1][0]), np.maximum(bs[0][1], bs[1][1]))
    elif name == "select_n":
        pl, ph = bs[0]
        cases = bs[1:]
        lo = np.full(out_shape, np.inf)
        hi = np.full(out_shape, -np.inf)
        for k, (cl, ch) in enumerate(cases):
            reach = (pl <= k) & (ph >= k)
            lo = np.where(reach, np.minimum(lo, cl), lo)
            hi = np.where(reach, np.maximum(hi, ch), hi)
        r = (lo, hi)
    if r is None:
        return None
    return bounded(out_shape, out_dtype, r[0], r[1])


def cases(bounds_list, budget: int):
    """Every assignment of values within the (finite) bounds, as offsets; ``None`` when the
    number of assignments exceeds ``budget``. Each item of ``bounds_list`` is ``(lo, hi)``
    scalars."""
    widths = []
    n = 1
    for lo, h in bounds_list:
        if not (np.isfinite(float(lo)) and np.isfinite(float(h))):
            return None
        widths.append(int(h - lo) + 1)
        n *= widths[-1]
        if n > budget:
            return None
    grids = np.meshgrid(*[np.arange(w) for w in widths], indexing="ij")
    offs = np.stack([g.reshape(-1) for g in grids], axis=1) if widths else np.zeros((1, 0))
    return [
        [int(lo) + int(o) for (lo, _), o in zip(bounds_list, row, strict=True)] for row in offs
    ]
