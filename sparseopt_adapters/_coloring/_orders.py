"""Vertex orders: one object per order, used by both graphs (STYLE.md habit 16).

An order's ``vertices(graph)`` works on a [`BipartiteGraph`][] (Jacobian columns or rows,
neighbors at distance 2) and on an [`AdjacencyGraph`][] (symmetric Hessian pattern) alike:
both graphs offer ``nv``, ``degree()``, ``adjacency()`` and ``adjacency_affordable``, as in
SparseMatrixColorings.jl's ``vertices(g::AdjacencyGraph, ::LargestFirst)`` and
``vertices(bg::BipartiteGraph, ::Val{side}, ::LargestFirst)``. [`candidates`][] owns the
policy of ``order="best"`` for both.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import numpy as np

from . import _kernels

ORDERS = (
    "natural",
    "largest_first",
    "smallest_last",
    "incidence_degree",
    "dynamic_largest_first",
    "dsatur",
    "random",
)


class AbstractOrder(abc.ABC):
    """A rule for the sequence in which greedy coloring visits the vertices."""

    name: str
    #: needs the explicit (distance-2 for Jacobians) adjacency, skipped by "best" when that
    #: graph is too big to build
    needs_adjacency: bool = False

    @abc.abstractmethod
    def vertices(self, graph) -> np.ndarray:
        """The vertices of ``graph`` in visiting order (a permutation of ``range(nv)``)."""


def _memo(graph, name, compute):
    """The order ``name`` of ``graph``, computed once per graph (the star and the acyclic
    search of ``method="auto"`` visit the same graph in the same orders)."""
    cache = graph.__dict__.setdefault("_order_cache", {})
    if name not in cache:
        perm = compute()
        perm.flags.writeable = False
        cache[name] = perm
    return cache[name]


@dataclasses.dataclass(frozen=True)
class NaturalOrder(AbstractOrder):
    name: str = "natural"

    def vertices(self, graph):
        return np.arange(graph.nv, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class RandomOrder(AbstractOrder):
    seed: int = 0
    name: str = "random"

    def vertices(self, graph):
        return np.random.default_rng(self.seed).permutation(graph.nv)


@dataclasses.dataclass(frozen=True)
class LargestFirst(AbstractOrder):
    """Decreasing degree (distance-2 degree for Jacobians), ties by index."""

    name: str = "largest_first"

    def vertices(self, graph):
        return np.argsort(-graph.degree(), kind="stable")


@dataclasses.dataclass(frozen=True)
class _DynamicDegree(AbstractOrder):
    """Degree-bucket orders: the degree counts the uncolored (smallest last, dynamic largest
    first) or colored (incidence degree) neighbors, updated as vertices are taken."""

    name: str
    needs_adjacency: bool = True

    def vertices(self, graph):
        return _memo(graph, self.name,
                     lambda: _kernels.dynamic_order(self.name, graph.nv, *graph.adjacency()))


def SmallestLast():  # noqa: N802  (a constructor, named like the other orders)
    return _DynamicDegree("smallest_last")


def IncidenceDegree():  # noqa: N802
    return _DynamicDegree("incidence_degree")


def DynamicLargestFirst():  # noqa: N802
    return _DynamicDegree("dynamic_largest_first")


@dataclasses.dataclass(frozen=True)
class DSatur(AbstractOrder):
    """The order in which DSATUR colors the vertices of the (distance-2) graph: most
    distinct neighbor colors first, then larger degree, then lower index. First-fit greedy
    in this order is DSATUR's coloring."""

    name: str = "dsatur"
    needs_adjacency: bool = True

    def vertices(self, graph):
        return _memo(graph, self.name,
                     lambda: _kernels.dsatur_order(graph.nv, *graph.adjacency()))


@dataclasses.dataclass(frozen=True, eq=False)
class ExplicitOrder(AbstractOrder):
    """A permutation given by the caller."""

    perm: np.ndarray
    name: str = "custom"

    def vertices(self, graph):
        return self.perm


def from_name(name: str, seed: int = 0) -> AbstractOrder:
    if name == "random":
        return RandomOrder(seed)
    return {
        "natural": NaturalOrder,
        "largest_first": LargestFirst,
        "smallest_last": SmallestLast,
        "incidence_degree": IncidenceDegree,
        "dynamic_largest_first": DynamicLargestFirst,
        "dsatur": DSatur,
    }[name]()


# -- the policy of order="best" ---------------------------------------------------------------
# Three orders per kind of graph: on every pattern of tests/_coloring/baseline_counts.json
# the best of these three equals the best of all six deterministic orders (what "best" tried
# before the compiled kernels). DSATUR is what reaches 5 colors on 5-point stencil Jacobians;
# incidence degree wins on some symmetric patterns. Jacobians whose distance-2 graph is too
# big to build get natural and largest first.
_BEST = {"bipartite": ("natural", "smallest_last", "dsatur"),
         "adjacency": ("natural", "smallest_last", "incidence_degree")}
_BEST_NO_ADJACENCY = ("natural", "largest_first")
# Star bicoloring (tried only when promising, see _api._bicoloring_promising) keeps all six:
# with three, one recorded pattern needs a product more.
_BEST_ALL = ("natural", "largest_first", "dsatur", "smallest_last", "incidence_degree",
             "dynamic_largest_first")


def candidates(order, graph, seed: int = 0, thorough: bool = False):
    """``(orders, is_best)``: the orders to try for ``order`` on ``graph``.

    ``order`` is a name from ``ORDERS``, a sequence of names, an explicit permutation or
    ``"best"`` (several orders, the fewest colors wins; the caller also tries the periodic
    coloring first and stops at a lower bound).
    """
    nv = graph.nv
    if isinstance(order, AbstractOrder):
        return [order], False
    if isinstance(order, str):
        if order == "best":
            if not graph.adjacency_affordable:
                names = _BEST_NO_ADJACENCY
            else:
                names = _BEST_ALL if thorough else _BEST[graph.kind]
            return [from_name(n, seed) for n in names], True
        if order not in ORDERS:
            raise ValueError(
                f"Unknown vertex order {order!r}: use 'best' or one of {', '.join(ORDERS)}, "
                "or pass a permutation of the vertices."
            )
        return [from_name(order, seed)], False
    if isinstance(order, np.ndarray) and order.dtype.kind in "iu":
        return [ExplicitOrder(_check_perm(order, nv))], False
    if isinstance(order, Sequence):
        if len(order) and all(isinstance(o, str) for o in order):
            for o in order:
                if o not in ORDERS:
                    raise ValueError(f"Unknown vertex order {o!r}: use one of {ORDERS}.")
            return [from_name(o, seed) for o in order], False
        return [ExplicitOrder(_check_perm(np.asarray(order), nv))], False
    raise TypeError(f"order must be a name, a sequence of names or a permutation, got {order!r}.")


def _check_perm(p, nv):
    p = np.asarray(p, dtype=np.int64).reshape(-1)
    if p.size != nv or not np.array_equal(np.sort(p), np.arange(nv)):
        raise ValueError(
            f"An explicit order must be a permutation of range({nv}) (one entry per vertex), "
            f"got an array of length {p.size}."
        )
    return p
