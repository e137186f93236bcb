"""Compiled kernels (``_coloring/_numba.py``) against the pure-Python reference
(``_coloring/_python.py``), the fallback without numba, and the on-disk cache."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sparseopt_adapters as sa
from sparseopt_adapters._coloring import _kernels, _python
from sparseopt_adapters._coloring._graphs import AdjacencyGraph, BipartiteGraph

from .patterns import (
    arrow,
    banded,
    brybnd_hessian,
    random_pattern,
    random_symmetric,
    steering_jacobian,
    stencil,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]

SYM = [
    random_symmetric(60, 0.1, 0),
    random_symmetric(200, 0.02, 1),
    random_symmetric(150, 0.08, 2, diag=False),
    brybnd_hessian(300),
    stencil(17, 13),
    arrow(80, 80, row=40, col=40),
    banded(90, 90, 3, 3),
    sa.SparsityPattern.identity(7),
]
JAC = [
    random_pattern(70, 50, 0.06, 3),
    random_pattern(30, 90, 0.1, 4),
    steering_jacobian(30),
    arrow(40, 60, row=2, col=55),
    banded(50, 70, 2, 5),
    stencil(9, 11),
]


@pytest.fixture(scope="module")
def compiled():
    kernels = _kernels._compiled()
    if not kernels:
        pytest.skip("numba is not importable")
    return kernels


def _orders(nv, ptr, idx, seed):
    out = [np.arange(nv), np.random.default_rng(seed).permutation(nv)]
    for name in ("incidence_degree", "smallest_last", "dynamic_largest_first"):
        out.append(_python.dynamic_order(name, nv, ptr, idx))
    out.append(_python.dsatur_order(nv, ptr, idx))
    return out


@pytest.mark.parametrize("k", range(len(SYM)))
def test_symmetric_kernels_match_the_python_reference(k, compiled):
    g = AdjacencyGraph(SYM[k])
    for name, kind in _kernels._DYNAMIC.items():
        np.testing.assert_array_equal(compiled.dynamic_order(kind, g.nv, g.ptr, g.idx),
                                      _python.dynamic_order(name, g.nv, g.ptr, g.idx), name)
    np.testing.assert_array_equal(compiled.dsatur_order(g.nv, g.ptr, g.idx),
                                  _python.dsatur_order(g.nv, g.ptr, g.idx))
    for perm in _orders(g.nv, g.ptr, g.idx, k):
        args = (g.nv, g.ptr, g.idx, g.eid, g.n_edges, perm)
        for name in ("star_coloring", "acyclic_coloring"):
            full = getattr(_python, name)(*args)
            np.testing.assert_array_equal(getattr(compiled, name)(*args, g.nv + 1), full)
            # capped at the colors it needs: the same; one less: given up (empty)
            kc = int(full.max()) + 1 if full.size else 0
            for cap, want in ((kc, full), (kc - 1, full[:0])):
                np.testing.assert_array_equal(getattr(compiled, name)(*args, cap), want)
                np.testing.assert_array_equal(getattr(_python, name)(*args, cap), want)
    starts = np.arange(g.nv)
    assert compiled.clique_lower_bound(g.nv, g.ptr, g.idx, starts) == \
        _python.clique_lower_bound(g.nv, g.ptr, g.idx, starts)


@pytest.mark.parametrize("k", range(len(JAC)))
def test_distance2_kernels_match_the_python_reference(k, compiled):
    for transpose in (False, True):
        bg = BipartiteGraph.of(JAC[k], transpose=transpose)
        ptr, idx = bg.adjacency()
        np.testing.assert_array_equal(
            compiled.distance2_degree(bg.nv, bg.v_ptr, bg.v_idx, bg.o_ptr, bg.o_idx),
            np.diff(ptr))
        for perm in _orders(bg.nv, ptr, idx, k):
            np.testing.assert_array_equal(
                compiled.greedy_distance2(bg.nv, bg.v_ptr, bg.v_idx, bg.o_ptr, bg.o_idx, perm),
                _python.greedy_distance2(bg.nv, bg.no, bg.v_ptr, bg.v_idx, perm))


def test_clique_bound_on_a_band_and_a_grid():
    # half-bandwidth 4: cliques of 5 consecutive vertices; a 5-point stencil has no triangle
    assert AdjacencyGraph(banded(40, 40, 4, 4)).clique_bound() == 5
    assert AdjacencyGraph(stencil(8, 9)).clique_bound() == 2


def _all_colorings():
    got = []
    for p in SYM:
        for method in ("star", "acyclic", "auto"):
            c = sa.color_hessian(p, method=method, warn=False)
            got.append((c.mode, c.order, c.column_colors))
    for p in JAC:
        for mode in ("forward", "reverse", "bidirectional", "auto"):
            c = sa.color_jacobian(p, mode=mode, warn=False)
            got.append((c.mode, c.order, np.concatenate([c.column_colors, c.row_colors])))
    return got


def test_public_colorings_are_the_same_with_either_backend(compiled, monkeypatch):
    """The backend changes the speed, never the colors."""
    with monkeypatch.context() as m:
        m.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")  # compiled for small graphs too
        fast = _all_colorings()
    with monkeypatch.context() as m:
        m.setattr(_kernels, "_COMPILED", False)
        slow = _all_colorings()
    for (mode_a, order_a, a), (mode_b, order_b, b) in zip(fast, slow, strict=True):
        assert (mode_a, order_a) == (mode_b, order_b)
        np.testing.assert_array_equal(a, b)


def _run(code, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_without_numba_the_python_kernels_are_used():
    """numba unimportable: the coloring still works (pure-Python kernels), same counts."""
    code = """
        import sys
        sys.modules["numba"] = None  # import numba -> ImportError
        import numpy as np
        import sparseopt_adapters as sa
        from sparseopt_adapters._coloring import _kernels, backend
        d = np.eye(300, dtype=bool) | np.eye(300, k=1, dtype=bool) | np.eye(300, k=-1, dtype=bool)
        p = sa.SparsityPattern.from_dense(d | d.T)
        _kernels.COLD_NNZ = 0
        print(backend(), sa.color_hessian(p, method="star").n_colors,
              sa.color_jacobian(p, mode="forward").n_colors)
    """
    out = _run(code, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "3", "3"]


def test_cache_works_from_a_read_only_package(tmp_path):
    """Where numba can write neither next to the package (installed read-only) nor to the
    user's cache folder, the kernels are cached under the temporary directory: the second
    process loads them instead of compiling them. (The two folders are made unwritable by
    patching numba's checks: chmod does not stop root.)"""
    if not _kernels._compiled():
        pytest.skip("numba is not importable")
    cache = tmp_path / "tmpdir"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(cache))
    code = """
        import numba.core.caching as caching

        def unwritable(self):
            raise PermissionError(self.get_cache_path())

        caching.InTreeCacheLocator.ensure_cache_path = unwritable
        caching.UserWideCacheLocator.ensure_cache_path = unwritable
        import numpy as np
        from sparseopt_adapters._coloring import _kernels
        k = _kernels._compiled()
        ptr = np.array([0, 1, 2]); idx = np.array([1, 0])
        k.greedy_distance2(2, ptr, idx, ptr, idx, np.arange(2))
        print(len(k.greedy_distance2.stats.cache_hits) > 0)
    """
    first = _run(code, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["False"]  # compiled
    assert any(cache.rglob("*greedy_distance2*.nbi"))  # in the fallback folder under TMPDIR
    second = _run(code, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["True"]  # loaded from that cache


def test_a_kernel_missing_from_the_disk_cache_is_compiled_in_another_process(tmp_path):
    """First run on a machine: a mid-size graph is colored by the Python kernels while a
    background process fills the disk cache; the next call loads the compiled kernel."""
    if not _kernels._compiled():
        pytest.skip("numba is not importable")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "SPARSEOPT_"))}
    env.update(PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    code = """
        import sys
        sys.path.insert(0, {tests!r})
        import sparseopt_adapters as sa
        from sparseopt_adapters._coloring import _kernels, _numba
        from patterns import brybnd_hessian
        p = brybnd_hessian(16000)  # 2.1e5 entries: between COLD_NNZ and COMPILE_NNZ
        a = sa.color_hessian(p, method="star")
        print(len(_numba.star_coloring.signatures), _kernels._WARMING is not None)
        _kernels._WARMING.wait(timeout=500)
        b = sa.color_hessian(p, method="star")
        print(len(_numba.star_coloring.signatures),
              len(_numba.star_coloring.stats.cache_hits) > 0,
              (a.column_colors == b.column_colors).all())
    """.format(tests=str(ROOT / "tests" / "_coloring"))
    out = _run(code, env=env)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.split() == ["0", "True"]  # Python kernel, compiler started
    assert second.split() == ["1", "True", "True"]  # loaded from the cache, same colors


def test_one_signature_per_kernel(compiled):
    """Read-only and writable, int32 and int64 inputs reach every kernel as one array type:
    a fresh process loads one cached overload per kernel (each load costs 3-20 ms). Before,
    read-only pattern arrays and writable order arrays made several signatures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEOPT_")}
    env.update(PYTHONPATH=str(ROOT), SPARSEOPT_ADAPTERS_COLORING="numba")
    code = """
        import sys
        sys.path.insert(0, {tests!r})
        import numpy as np
        import sparseopt_adapters as sa
        from sparseopt_adapters._coloring import _kernels, _numba
        from sparseopt_adapters._coloring._graphs import AdjacencyGraph
        from patterns import arrow, brybnd_hessian, steering_jacobian
        p = brybnd_hessian(60)
        for method in ("star", "acyclic"):
            sa.coloring_from_colors(p, method, sa.color_hessian(p, method=method).colors)
        sa.color_hessian(p)
        for mode in ("forward", "reverse", "bidirectional", "auto"):
            sa.color_jacobian(steering_jacobian(10), mode=mode, warn=False)
            sa.color_jacobian(arrow(30, 30, row=1, col=2), mode=mode, warn=False)
        g = AdjacencyGraph(p)
        _kernels.star_coloring(g.nv, g.ptr.astype(np.int32), g.idx, g.eid, g.n_edges,
                               np.arange(g.nv, dtype=np.int32))
        for name in dir(_numba):
            kernel = getattr(_numba, name)
            if hasattr(kernel, "signatures") and not name.startswith("_"):
                print(name, len(kernel.signatures))
    """.format(tests=str(ROOT / "tests" / "_coloring"))
    out = _run(code, env=env)
    assert out.returncode == 0, out.stderr
    counts = dict(line.split() for line in out.stdout.splitlines())
    assert int(counts["star_coloring"]) == 1
    assert all(int(c) <= 1 for c in counts.values()), counts


def test_small_patterns_do_not_start_numba():
    """Below ``COLD_NNZ`` a fresh process colors without importing numba (its cold start
    costs more than the Python kernels there); once the process has colored ``COLD_NNZ``
    entries in all, numba serves (its cold start is then paid once, not the Python cost
    again and again)."""
    if not _kernels.available():
        pytest.skip("numba is not importable")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEOPT_")}
    env.update(PYTHONPATH=str(ROOT))
    code = """
        import sys
        sys.path.insert(0, {tests!r})
        import sparseopt_adapters as sa
        from sparseopt_adapters._coloring import _kernels
        from patterns import brybnd_hessian, stencil
        h = brybnd_hessian(400)  # 5e3 entries
        j = stencil(30, 30)  # 4.4e3 entries
        _kernels.COLD_NNZ = 2 * h.nnz + j.nnz + 1
        sa.color_hessian(h)
        sa.color_jacobian(j)
        sa.color_hessian(h)
        print("numba" in sys.modules)
        a = sa.color_hessian(h)  # 3 h.nnz + j.nnz colored in all
        print("numba" in sys.modules, a.n_colors)
    """.format(tests=str(ROOT / "tests" / "_coloring"))
    out = _run(code, env=env)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "False"
    assert second == "True 7"


def test_validity_checks_match_the_numpy_ones(compiled, monkeypatch):
    """The compiled star/acyclic checks (used on the periodic candidates ``v mod k``) answer
    as the vectorised numpy checks, on valid and invalid colorings."""
    from sparseopt_adapters._coloring._graphs import _acyclic_valid, _star_valid

    rng = np.random.default_rng(0)
    answers = []
    for p in SYM:
        g = AdjacencyGraph(p)
        cands = [np.arange(g.nv) % k for k in range(1, 16)]
        for method in ("star", "acyclic"):
            c = sa.color_hessian(p, method=method, warn=False).colors
            cands.append(c)
            bad = c.copy()
            bad[rng.integers(g.nv)] = int(c.max()) + 1 if c.size else 0  # often still valid
            cands.append(bad)
        for colors in cands:
            colors = np.asarray(colors, np.int64)
            for check in (_star_valid, _acyclic_valid):
                monkeypatch.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")
                fast = check(g, colors)
                monkeypatch.setattr(_kernels, "_COMPILED", False)
                slow = check(g, colors)
                monkeypatch.undo()
                assert fast == slow, (check.__name__, p, colors)
                answers.append(fast)
    assert any(answers) and not all(answers)


def test_dense_rows_and_columns_count_towards_the_compiled_threshold():
    """An arrowhead's Python colouring costs ~d² for its dense row/column, not its nnz: at
    n = 4000 (1.2e4 entries) the Python kernels took 15 s where numba takes ~1 s, so its
    effective size must reach ``COLD_NNZ``; patterns without dense rows count their nnz."""
    arrow_pattern = arrow(4000, 4000)  # dense 16 MB mask: fine at this size
    assert arrow_pattern.nnz < _kernels.COLD_NNZ <= _kernels.effective_entries(arrow_pattern)
    band = stencil(30, 30)
    assert _kernels.effective_entries(band) == band.nnz
