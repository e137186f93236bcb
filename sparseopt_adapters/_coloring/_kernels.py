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
_COMPILED = None  # the module of loaded compiled kernels, False when unavailable
_WARMING = None  # the thread loading (or compiling) them in the background
# Graphs with fewer CSR entries than this are colored by the pure-Python kernels while the
# compiled ones are not loaded yet (both give the same colors): such a call costs less than
# loading numba and the kernels (about 0.3-1 s from the disk cache, seconds to compile on the
# first run on a machine). The first such call starts loading them in a background thread,
# so later calls find them ready. Larger graphs wait for the compiled kernels.
SMALL_GRAPH = 20_000


def backend() -> str:
    """``"numba"`` when the compiled kernels can be used (loading them now), else
    ``"python"``."""
    return "numba" if _compiled() else "python"


def _mode() -> str:
    return os.environ.get("SPARSEOPT_ADAPTERS_COLORING", "auto").lower()


def _compiled():
    """The compiled kernels, loaded (or compiled) now if needed; False without numba."""
    global _COMPILED
    if _COMPILED is None:
        with _LOCK:
            if _COMPILED is None:
                _COMPILED = _load()
    return _COMPILED


def _load():
    if _mode() == "python":
        return False
    try:
        from . import _numba
    except Exception:  # noqa: BLE001  (an unimportable numba: any error means no numba)
        return False
    return _numba


def _warm_up():
    kernels = _compiled()
    if kernels:
        kernels.warm_up()


def warm_up_in_background() -> None:
    """Start loading the compiled kernels in a daemon thread (once)."""
    global _WARMING
    if _WARMING is not None or _COMPILED is False:
        return
    with _LOCK:
        if _WARMING is None:
            _WARMING = threading.Thread(target=_warm_up, name="sparseopt-coloring-jit",
                                        daemon=True)
            _WARMING.start()


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


def available() -> bool:
    """Whether compiled kernels can be used (numba importable, not switched off), without
    importing numba."""
    if _COMPILED is not None:
        return bool(_COMPILED)
    if _mode() == "python":
        return False
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _use_compiled(size: int, kernel: str) -> bool:
    """Whether to run ``kernel`` compiled on a graph with ``size`` CSR entries."""
    if _COMPILED is False:
        return False
    if _COMPILED is not None and getattr(_COMPILED, kernel).signatures:
        return True  # compiled (or loaded from the disk cache) already
    if size < SMALL_GRAPH and _mode() != "numba":
        warm_up_in_background()
        return False
    return bool(_compiled())


def _i64(a):
    return np.ascontiguousarray(a, dtype=np.int64)


# -- dispatch (same signatures as _python) ----------------------------------------------------
def greedy_distance2(nv, no, v_ptr, v_idx, o_ptr, o_idx, order):
    if _use_compiled(v_idx.size, "greedy_distance2"):
        return _COMPILED.greedy_distance2(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr),
                                          _i64(o_idx), _i64(order))
    return _python.greedy_distance2(nv, no, v_ptr, v_idx, order)


def star_coloring(nv, ptr, idx, eid, n_edges, order):
    if _use_compiled(idx.size, "star_coloring"):
        return _COMPILED.star_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                       _i64(order))
    return _python.star_coloring(nv, ptr, idx, eid, n_edges, order)


def acyclic_coloring(nv, ptr, idx, eid, n_edges, order):
    if _use_compiled(idx.size, "acyclic_coloring"):
        return _COMPILED.acyclic_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                          _i64(order))
    return _python.acyclic_coloring(nv, ptr, idx, eid, n_edges, order)


_DYNAMIC = {"incidence_degree": 0, "smallest_last": 1, "dynamic_largest_first": 2}


def dynamic_order(name, nv, ptr, idx):
    if _use_compiled(idx.size, "dynamic_order"):
        return _COMPILED.dynamic_order(_DYNAMIC[name], nv, _i64(ptr), _i64(idx))
    return _python.dynamic_order(name, nv, ptr, idx)


def dsatur_order(nv, ptr, idx):
    dmax = int(np.diff(ptr).max()) if nv else 0
    # the heap key (saturation, degree, vertex) is packed into one int64
    fits = (dmax + 2) ** 2 * max(nv, 1) < 2**62
    if fits and _use_compiled(idx.size, "dsatur_order"):
        return _COMPILED.dsatur_order(nv, _i64(ptr), _i64(idx))
    return _python.dsatur_order(nv, ptr, idx)


def clique_lower_bound(nv, ptr, idx, starts):
    if _use_compiled(idx.size, "clique_lower_bound"):
        return int(_COMPILED.clique_lower_bound(nv, _i64(ptr), _i64(idx), _i64(starts)))
    return _python.clique_lower_bound(nv, ptr, idx, starts)


def star_valid(nv, ptr, idx, colors, k):
    """Compiled star-coloring check, or None (then the caller uses the numpy one)."""
    if nv * k > 50_000_000 or not _use_compiled(idx.size, "star_valid"):
        return None
    return bool(_COMPILED.star_valid(nv, _i64(ptr), _i64(idx), _i64(colors), k))


def distance2_degree(nv, v_ptr, v_idx, o_ptr, o_idx):
    """Number of distinct distance-2 neighbors of each vertex (compiled), or None."""
    if not _use_compiled(v_idx.size, "distance2_degree"):
        return None
    return _COMPILED.distance2_degree(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr), _i64(o_idx))
