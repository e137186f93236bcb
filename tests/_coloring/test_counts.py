"""Colour counts never grow: every (pattern, mode, order) recorded before the compiled
kernels (``baseline_counts.json``, made by the pure-Python code of December 2026) needs the
same or fewer colors now, with either kernel backend."""

import json
import pathlib
import warnings

import numpy as np
import pytest
import test_coloring as T

import sparseopt_adapters as sa
from sparseopt_adapters._coloring import ORDERS, _kernels

from .patterns import EXTRA_JAC, EXTRA_SYM

BASELINE = json.loads((pathlib.Path(__file__).parent / "baseline_counts.json").read_text())
JAC = {**T.JAC_PATTERNS, **EXTRA_JAC}
SYM = {**T.SYM_PATTERNS, **EXTRA_SYM}


@pytest.fixture(params=["numba", "python"])
def backend(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(_kernels, "_COMPILED", False)
    else:
        if not _kernels._compiled():
            pytest.skip("numba is not importable")
        monkeypatch.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")  # every graph compiled
    return request.param


def _check(table, name, color):
    worse = []
    for key, before in BASELINE[table].items():
        pname, mode, order = key.split("|")
        if pname != name:
            continue
        assert order in ("best",) + ORDERS
        now = color(pname, mode, order)
        if now > before:
            worse.append(f"{key}: {before} -> {now}")
    assert not worse, worse


@pytest.mark.parametrize("name", list(JAC))
def test_jacobian_counts_not_worse(name, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        _check("jacobian", name,
               lambda p, m, o: sa.color_jacobian(JAC[p], mode=m, order=o).n_colors)


@pytest.mark.parametrize("name", list(SYM))
def test_hessian_counts_not_worse(name, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        _check("hessian", name,
               lambda p, m, o: sa.color_hessian(SYM[p], method=m, order=o).n_colors)


def test_baseline_covers_every_pattern():
    names = {k.split("|")[0] for t in BASELINE.values() for k in t}
    assert names == set(JAC) | set(SYM)


@pytest.mark.parametrize("name", list(SYM))
def test_auto_hessian_is_the_choice_from_both_full_searches(name):
    """``method="auto"`` caps its star and acyclic searches by each other; it must choose
    what coloring both fully and applying the rule (acyclic when it saves two colors and
    the star count is above 3 and 2 over the clique bound) chooses, colors included."""
    from sparseopt_adapters._coloring._graphs import AdjacencyGraph

    p = SYM[name]
    p = p if p.is_symmetric() else p.symmetrize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        for order in ("best", "natural", "smallest_last"):
            star = sa.color_hessian(p, method="star", order=order)
            acyclic = sa.color_hessian(p, method="acyclic", order=order)
            auto = sa.color_hessian(p, order=order)
            s, a = star.n_colors, acyclic.n_colors
            clique = AdjacencyGraph(p).clique_bound()
            want = acyclic if (s > 3 and s - 2 >= clique and a <= s - 2) else star
            assert (auto.mode, auto.order) == (want.mode, want.order)
            np.testing.assert_array_equal(auto.colors, want.colors)
