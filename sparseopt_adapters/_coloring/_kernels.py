"""Compiled coloring kernels (numba) over CSR arrays, and the dispatch to them.

Each kernel is the compiled twin of the pure-Python one in ``_python.py``, written so that
both give the same colors (same vertex visits, same tie-breaks): the tests compare them.

- ``greedy_distance2``: first-fit column coloring of a bipartite graph, a forbidden-colour
  array stamped with the vertex id (no clearing between vertices).
- ``star_coloring``: Gebremedhin-Tarafdar-Manne-Pothen (2007) Algorithm 4.1, with the
  2-colored stars and their hubs kept per edge.
- ``acyclic_coloring``: Algorithm 3.1, the 2-colored trees in a union-find over edges.
- ``dynamic_order``: incidence degree, smallest last and dynamic largest first with degree
  buckets; ``dsatur_order``: DSATUR with a binary heap and a hash set of (vertex, color).

numba is imported on the first kernel call, not with the package. The kernels use
``cache=True``: the machine code is written next to this file (``__pycache__``), or, where that
folder is read-only, to numba's user-wide cache; when neither is writable, to a folder in the
system temporary directory (numba's ``NUMBA_CACHE_DIR``). Without numba every call goes to
the pure-Python kernels (set ``SPARSEOPT_ADAPTERS_COLORING=python`` to force them).
"""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

from . import _python

_LOCK = threading.Lock()
_COMPILED = None  # the module namespace of compiled kernels, or False when unavailable
# Graphs with fewer CSR entries than this are colored by the pure-Python kernels while the
# compiled ones are not loaded yet: loading them from the disk cache costs more than the
# Python loop on such graphs, and both give the same colors.
SMALL_GRAPH = 3000


def backend() -> str:
    """``"numba"`` when the compiled kernels can be used, else ``"python"``."""
    return "numba" if _compiled() else "python"


def _compiled():
    global _COMPILED
    if _COMPILED is None:
        with _LOCK:
            if _COMPILED is None:
                _COMPILED = _load()
    return _COMPILED


def _load():
    if os.environ.get("SPARSEOPT_ADAPTERS_COLORING", "").lower() == "python":
        return False
    try:
        from . import _numba
    except Exception:  # noqa: BLE001  (an unimportable numba: any error means no numba)
        return False
    return _numba


def _njit(fn):
    """``numba.njit(cache=True)``, with a writable cache folder when the package's and the
    user's are not (numba raises at decoration when no cache locator applies)."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:
        from numba.core import config

        if not config.CACHE_DIR:
            config.CACHE_DIR = os.path.join(
                tempfile.gettempdir(), f"sparseopt_adapters-numba-{os.getuid()}"
            )
            try:
                return numba.njit(cache=True, nogil=True)(fn)
            except RuntimeError:
                pass
        return numba.njit(cache=False, nogil=True)(fn)


def _use_compiled(size: int) -> bool:
    if _COMPILED is None and size < SMALL_GRAPH:
        return False
    return bool(_compiled())


def _i64(a):
    return np.ascontiguousarray(a, dtype=np.int64)


# -- dispatch (same signatures as _python) ----------------------------------------------------
def greedy_distance2(nv, no, v_ptr, v_idx, o_ptr, o_idx, order):
    if _use_compiled(v_idx.size):
        return _COMPILED.greedy_distance2(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr),
                                          _i64(o_idx), _i64(order))
    return _python.greedy_distance2(nv, no, v_ptr, v_idx, order)


def star_coloring(nv, ptr, idx, eid, n_edges, order):
    if _use_compiled(idx.size):
        return _COMPILED.star_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                       _i64(order))
    return _python.star_coloring(nv, ptr, idx, eid, n_edges, order)


def acyclic_coloring(nv, ptr, idx, eid, n_edges, order):
    if _use_compiled(idx.size):
        return _COMPILED.acyclic_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                          _i64(order))
    return _python.acyclic_coloring(nv, ptr, idx, eid, n_edges, order)


_DYNAMIC = {"incidence_degree": 0, "smallest_last": 1, "dynamic_largest_first": 2}


def dynamic_order(name, nv, ptr, idx):
    if _use_compiled(idx.size):
        return _COMPILED.dynamic_order(_DYNAMIC[name], nv, _i64(ptr), _i64(idx))
    return _python.dynamic_order(name, nv, ptr, idx)


def dsatur_order(nv, ptr, idx):
    dmax = int(np.diff(ptr).max()) if nv else 0
    # the heap key (saturation, degree, vertex) is packed into one int64
    fits = (dmax + 2) ** 2 * max(nv, 1) < 2**62
    if fits and _use_compiled(idx.size):
        return _COMPILED.dsatur_order(nv, _i64(ptr), _i64(idx))
    return _python.dsatur_order(nv, ptr, idx)


def distance2_degree(nv, v_ptr, v_idx, o_ptr, o_idx):
    """Number of distinct distance-2 neighbors of each vertex (compiled), or None."""
    if not _use_compiled(v_idx.size):
        return None
    return _COMPILED.distance2_degree(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr), _i64(o_idx))
