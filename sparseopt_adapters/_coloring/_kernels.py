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
- ``star_gather`` / ``acyclic_substitution``: the decompression data (the twins of
  ``_decompression._star_numpy`` / ``_acyclic_numpy``, equal array for array): per-entry
  product choice with the neutral-color postprocessing; the 2-colored trees as a union-find
  forest over (vertex, color) nodes, rooted at leaves and laid out in depth-first preorder.
- ``star_valid`` / ``acyclic_valid`` / ``clique_lower_bound`` / ``transpose_source``:
  validity of the periodic candidates, the clique bound, the linear-time transpose.

``star_coloring`` and ``acyclic_coloring`` take a ``cap`` and give up once more colors are
needed: a search over several orders only needs colorings that beat the best so far.

Which kernels serve a call is decided in one place, ``_use_compiled``, from one number a
user can reason about: the ``nnz`` of the pattern being colored (the symmetrized one for
Hessians), against ``COLD_NNZ``. A process that has not loaded numba yet pays its cold start
on the first compiled call: importing numba (0.15-0.35 s), numba's first cached-overload
load (0.2-0.4 s: its target context) and 3-20 ms per kernel -- 0.35-1.0 s in all on the
shared 2-core box, against milliseconds of kernel work. The pure-Python kernels cost about
1-3.5 us per entry (BRYBND Hessian, 5-point and main-example Jacobians, "auto"), so below
``COLD_NNZ`` entries the first call in a process uses Python. Measured (fresh processes,
warm disk cache, ``python benchmarks/bench_coloring.py``, shared 2-core box):

    pattern                    nnz     Python 1st   numba cold 1st   numba warm
    BRYBND Hessian n=1e4       1.3e5   0.24 s       0.39 s           0.015 s
    BRYBND Hessian n=2e4       2.6e5   0.48 s       0.38 s           0.030 s
    5-point Jacobian 150²      1.1e5   0.29 s       0.48 s           0.041 s
    5-point Jacobian 220²      2.4e5   0.44 s       0.40 s           0.051 s
    main example J, nc=28      1.8e5   0.20 s       0.45 s           0.042 s

The entries of earlier colorings in the process count towards ``COLD_NNZ`` (see
[`pattern_size`][]): a second 1.8e5-entry coloring loads numba rather than paying the
Python kernels again. A kernel already in memory is always used. Both give the same colors
and decompression data.

The kernels use ``cache=True``: the machine code is written next to this file
(``__pycache__``), or, where that folder is read-only, to numba's user-wide cache; when
neither is writable, to a folder in the system temporary directory (numba's
``NUMBA_CACHE_DIR``). A kernel missing from that cache is compiled by a background process
while the pure-Python kernel serves the call (up to ``COMPILE_NNZ`` entries). Without
numba every call goes to the pure-Python kernels (``SPARSEOPT_ADAPTERS_COLORING=python``
forces them, ``=numba`` forces the compiled ones).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
import threading

import numpy as np

from . import _python

_LOCK = threading.Lock()
_COMPILED = None  # the module of compiled kernels (imported, numba decorated), False: none
_WARMING = None  # the background process that compiles them into the disk cache
# nnz of the pattern being colored, set by pattern_size
_NNZ = contextvars.ContextVar("sparseopt_adapters_coloring_nnz", default=None)
_SEEN_NNZ = 0  # entries of the patterns colored so far in this process
# The one threshold: below COLD_NNZ pattern entries, a kernel not yet in memory runs as
# Python (cheaper than numba's cold start, see the module docstring and the table of
# benchmarks/bench_coloring.py; the measured crossover is 2.5e5-3e5 entries for both the
# BRYBND Hessian and the 5-point / main-example Jacobians, kept lower because patterns with
# dense rows make the Python kernels slower per entry). Both give the same colors.
COLD_NNZ = 200_000
# Up to this many entries, a kernel that is not in the disk cache yet (the first run on a
# machine, or a new numba) is not compiled in the user's process: the Python kernel runs
# (a few seconds at most) while a background process compiles every kernel into the cache
# (10-30 s), for the next call and the next run. Larger patterns wait for the compilation.
COMPILE_NNZ = 1_000_000


def backend() -> str:
    """``"numba"`` when the compiled kernels can be used, else ``"python"``."""
    return "numba" if _compiled() else "python"


def _mode() -> str:
    """``SPARSEOPT_ADAPTERS_COLORING``: ``python`` (never compiled), ``numba`` (always
    compiled, compiling in the process when needed) or ``auto``."""
    return os.environ.get("SPARSEOPT_ADAPTERS_COLORING", "auto").lower()


def _compiled():
    """The compiled kernels (decorated, compiled lazily per kernel); False without numba."""
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


def _in_disk_cache(kernel) -> bool:
    """Whether numba's disk cache holds a current entry for ``kernel`` (reads its index)."""
    try:
        return bool(kernel._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001  (private numba API: unknown means not cached)
        return False


_WARM_UP = """
import sys
sys.path.insert(0, {root!r})
from sparseopt_adapters._coloring import _numba
_numba.warm_up()
"""


def compile_in_background() -> None:
    """Compile every kernel into the disk cache in a separate process (once per process):
    no compiler work, and no lock held, in the user's process."""
    global _WARMING
    with _LOCK:
        if _WARMING is not None:
            return
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            _WARMING = subprocess.Popen(
                [sys.executable, "-c", _WARM_UP.format(root=root)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError:
            _WARMING = False


def _njit(fn):
    """``numba.njit(cache=True)``, with a writable cache folder when the package's and the
    user's are not (numba raises at decoration when no cache locator applies)."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:
        from numba.core import config

        if not config.CACHE_DIR:
            uid = os.getuid() if hasattr(os, "getuid") else "user"
            config.CACHE_DIR = os.path.join(tempfile.gettempdir(),
                                            f"sparseopt_adapters-numba-{uid}")
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
    """Whether to run ``kernel`` compiled, for a coloring of a pattern of ``size`` entries
    (the pattern's ``nnz`` set by [`pattern_size`][]; ``size`` is the kernel's own graph
    when no pattern is set). The one place that decides (see ``COLD_NNZ``)."""
    if _COMPILED is False:
        return False
    mode = _mode()
    if mode == "python":
        return False
    if _COMPILED is not None and getattr(_COMPILED, kernel).signatures:
        return True  # in memory already
    nnz = _NNZ.get()
    nnz = size if nnz is None else nnz
    if nnz < COLD_NNZ and mode != "numba":
        return False
    kernels = _compiled()
    if not kernels:
        return False
    if hasattr(_WARMING, "poll"):
        _WARMING.poll()  # reap the background compiler once it is done
    if mode == "numba" or nnz >= COMPILE_NNZ or _in_disk_cache(getattr(kernels, kernel)):
        return True
    compile_in_background()
    return False


# Rows or columns denser than this cost the Python kernels more than their entries say: their
# loops run vectorised over neighbours of neighbours, so a vertex of degree d costs ~d² numpy
# element operations (~80 ns each, against ~2 us per entry otherwise). Measured on an arrowhead
# (one dense row and column, bidirectional "auto"): Python 0.7 s at n=1e3, 15 s at n=4e3 and
# 185 s at n=1.6e4, where numba takes ~1 s cold.
DENSE_DEGREE = 64
SQUARED_DEGREE_PER_ENTRY = 25


def effective_entries(pattern) -> int:
    """The pattern's ``nnz`` plus ``d²/25`` for each row or column of degree ``d > 64``: the
    number of plain entries the Python kernels' work on this pattern is worth. Patterns
    without dense rows or columns count their ``nnz`` alone."""
    nnz = int(pattern.nnz)
    m, n = pattern.shape
    extra = 0
    for idx, size in ((pattern.rows, m), (pattern.cols, n)):
        deg = np.bincount(np.asarray(idx, dtype=np.int64), minlength=size)
        dense = deg[deg > DENSE_DEGREE].astype(np.float64)
        extra += int((dense**2).sum() / SQUARED_DEGREE_PER_ENTRY)
    return nnz + extra


@contextlib.contextmanager
def pattern_size(nnz):
    """Within this block the kernels are chosen for a pattern of ``nnz`` entries (a pattern
    counts its [`effective_entries`][]): set by
    the public entry points, so that every kernel of one coloring makes the same choice.

    The entries of earlier colorings in this process count too (a ski-rental rule): once
    the Python kernels have colored ``COLD_NNZ`` entries in all, numba's cold start is paid
    (once) instead of the Python cost again, so that a process coloring many patterns pays
    at most about twice the cheaper of the two."""
    global _SEEN_NNZ
    nnz = effective_entries(nnz) if hasattr(nnz, "nnz") else int(nnz)
    token = _NNZ.set(nnz + _SEEN_NNZ)
    try:
        yield
    finally:
        _NNZ.reset(token)
        _SEEN_NNZ += nnz


def _i64(a):
    """A contiguous read-only int64 array (a view when it already is int64): every kernel
    sees one array type, so numba loads one signature per kernel."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


# -- dispatch (same signatures as _python) ----------------------------------------------------
def greedy_distance2(nv, no, v_ptr, v_idx, o_ptr, o_idx, order):
    if _use_compiled(v_idx.size, "greedy_distance2"):
        return _COMPILED.greedy_distance2(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr),
                                          _i64(o_idx), _i64(order))
    return _python.greedy_distance2(nv, no, v_ptr, v_idx, order)


def star_coloring(nv, ptr, idx, eid, n_edges, order, cap=None):
    """Star colors, or an empty array once more than ``cap`` colors are needed."""
    cap = nv + 1 if cap is None else int(cap)
    if _use_compiled(idx.size, "star_coloring"):
        return _COMPILED.star_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                       _i64(order), cap)
    return _python.star_coloring(nv, ptr, idx, eid, n_edges, order, cap)


def acyclic_coloring(nv, ptr, idx, eid, n_edges, order, cap=None):
    """Acyclic colors, or an empty array once more than ``cap`` colors are needed."""
    cap = nv + 1 if cap is None else int(cap)
    if _use_compiled(idx.size, "acyclic_coloring"):
        return _COMPILED.acyclic_coloring(nv, _i64(ptr), _i64(idx), _i64(eid), n_edges,
                                          _i64(order), cap)
    return _python.acyclic_coloring(nv, ptr, idx, eid, n_edges, order, cap)


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


def acyclic_valid(nv, ptr, idx, colors, k):
    """Compiled acyclic-coloring check, or None (then the caller uses the numpy one)."""
    if nv * k > 50_000_000 or not _use_compiled(idx.size, "acyclic_valid"):
        return None
    return bool(_COMPILED.acyclic_valid(nv, _i64(ptr), _i64(idx), _i64(colors), k))


def distance2_degree(nv, v_ptr, v_idx, o_ptr, o_idx):
    """Number of distinct distance-2 neighbors of each vertex (compiled), or None."""
    if not _use_compiled(v_idx.size, "distance2_degree"):
        return None
    return _COMPILED.distance2_degree(nv, _i64(v_ptr), _i64(v_idx), _i64(o_ptr), _i64(o_idx))


def transpose_source(n, cols):
    """Stable counting sort of ``cols`` (compiled), or None (then numpy's stable argsort)."""
    if not _use_compiled(cols.size, "transpose_source"):
        return None
    return _COMPILED.transpose_source(n, _i64(cols))


def star_gather(n, ptr, idx, raw, k):
    """Compiled star decompression data (see ``_numba.star_gather``), or None."""
    if not _use_compiled(idx.size, "star_gather"):
        return None
    return _COMPILED.star_gather(n, _i64(ptr), _i64(idx), _i64(raw), k)


def acyclic_substitution(n, ptr, idx, raw, k):
    """Compiled substitution data (see ``_numba.acyclic_substitution``), or None."""
    if not _use_compiled(idx.size, "acyclic_substitution"):
        return None
    return _COMPILED.acyclic_substitution(n, _i64(ptr), _i64(idx), _i64(raw), k)
