"""A lineax operator holding a sparse matrix: values on a static pattern."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from .._pattern import SparsityPattern
from ._detect import struct_ravel


class SparseMatrixOperator(lx.AbstractLinearOperator):
    """``values`` on a fixed ``SparsityPattern`` as a lineax operator (pytree in and out).

    ``values`` is the only array leaf; the pattern and the structures are static, so the
    operator can sit in an optimistix solver state across ``while_loop`` iterations. ``mv`` is a
    gather and a segment sum; nothing dense is built except by ``as_matrix``.
    """

    values: jax.Array
    pattern: SparsityPattern = eqx.field(static=True)
    input_structure: Any = eqx.field(static=True)
    output_structure: Any = eqx.field(static=True)
    tags: frozenset = eqx.field(static=True)

    def __init__(self, values, pattern, input_structure, output_structure=None, tags=()):
        self.values = values
        self.pattern = pattern
        self.input_structure = input_structure
        self.output_structure = input_structure if output_structure is None else output_structure
        self.tags = frozenset(tags) if not isinstance(tags, frozenset) else tags

    def mv(self, vector):
        ravel_in, _, _ = struct_ravel(self.input_structure)
        _, unravel_out, m = struct_ravel(self.output_structure)
        x = ravel_in(vector)
        p = self.pattern
        y = jax.ops.segment_sum(
            self.values * x[p.cols], p.rows, num_segments=m, indices_are_sorted=True
        )
        return unravel_out(y)

    def as_matrix(self):
        p = self.pattern
        return jnp.zeros(p.shape, self.values.dtype).at[p.rows, p.cols].set(self.values)

    def transpose(self):
        if lx.symmetric_tag in self.tags:
            return self
        p = self.pattern
        perm = np.lexsort((p.rows, p.cols))
        pt = SparsityPattern(p.cols[perm], p.rows[perm], (p.shape[1], p.shape[0]))
        return SparseMatrixOperator(
            self.values[perm], pt, self.output_structure, self.input_structure,
            lx.transpose_tags(self.tags),
        )

    def in_structure(self):
        return self.input_structure

    def out_structure(self):
        return self.output_structure


def _entries(op: SparseMatrixOperator, offset: int):
    """Values on the ``offset`` diagonal (zeros where the pattern has none)."""
    p = op.pattern
    n = min(p.shape[0], p.shape[1] - offset) if offset >= 0 else min(p.shape[0] + offset,
                                                                        p.shape[1])
    sel = np.flatnonzero(p.cols - p.rows == offset)
    pos = p.rows[sel] if offset >= 0 else p.cols[sel]
    return jnp.zeros((max(n, 0),), op.values.dtype).at[pos].set(op.values[sel])


def _pattern_only(op: SparseMatrixOperator, offsets) -> bool:
    p = op.pattern
    return p.shape[0] == p.shape[1] and bool(np.all(np.isin(p.cols - p.rows, offsets)))


@lx.linearise.register(SparseMatrixOperator)
def _(operator):
    return operator


@lx.materialise.register(SparseMatrixOperator)
def _(operator):
    return operator


@lx.diagonal.register(SparseMatrixOperator)
def _(operator):
    return _entries(operator, 0)


@lx.tridiagonal.register(SparseMatrixOperator)
def _(operator):
    return _entries(operator, 0), _entries(operator, -1), _entries(operator, 1)


@lx.is_symmetric.register(SparseMatrixOperator)
def _(operator):
    return lx.symmetric_tag in operator.tags or _pattern_only(operator, [0])


@lx.is_diagonal.register(SparseMatrixOperator)
def _(operator):
    return lx.diagonal_tag in operator.tags or _pattern_only(operator, [0])


@lx.is_tridiagonal.register(SparseMatrixOperator)
def _(operator):
    return lx.tridiagonal_tag in operator.tags or _pattern_only(operator, [-1, 0, 1])


@lx.has_unit_diagonal.register(SparseMatrixOperator)
def _(operator):
    return lx.unit_diagonal_tag in operator.tags


@lx.is_lower_triangular.register(SparseMatrixOperator)
def _(operator):
    p = operator.pattern
    return lx.lower_triangular_tag in operator.tags or (
        p.shape[0] == p.shape[1] and bool(np.all(p.cols <= p.rows))
    )


@lx.is_upper_triangular.register(SparseMatrixOperator)
def _(operator):
    p = operator.pattern
    return lx.upper_triangular_tag in operator.tags or (
        p.shape[0] == p.shape[1] and bool(np.all(p.cols >= p.rows))
    )


@lx.is_positive_semidefinite.register(SparseMatrixOperator)
def _(operator):
    return lx.positive_semidefinite_tag in operator.tags


@lx.is_negative_semidefinite.register(SparseMatrixOperator)
def _(operator):
    return lx.negative_semidefinite_tag in operator.tags


@lx.conj.register(SparseMatrixOperator)
def _(operator):
    return operator
