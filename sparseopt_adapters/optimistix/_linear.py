"""A lineax solver that assembles any operator by colored products and solves sparse-direct."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import lineax as lx

from .._coloring import ColoringResult, color_jacobian
from .._direct import damped_coloring as damped_coloring  # the one shared implementation
from .._direct import stack_identity as stack_identity
from .._gauss_newton import SparseDirectSolver
from .._pattern import SparsityPattern
from ._detect import flat_size, operator_pattern

_JACOBIAN_MODES = ("auto", "forward", "reverse", "bidirectional")


class _SparseDirectState(eqx.Module):
    solver: SparseDirectSolver = eqx.field(static=True)
    inner: Any


class SparseDirect(lx.AbstractLinearSolver):
    """Sparse direct lineax solver: colored assembly of the operator, then a sparse
    factorisation (the minimum-norm least-squares solution, any shape or rank).

    A drop-in ``linear_solver=`` for optimistix's own solvers
    (``optx.GaussNewton``, ``optx.LevenbergMarquardt``, ``optx.Dogleg``, ``optx.Newton``,
    ``optx.Chord``) and for ``lineax.linear_solve``. ``init`` finds the operator's sparsity
    pattern (once per trace: detection runs on ``operator.mv``, unless ``pattern`` is given),
    colors it, applies the operator once per color, and decompresses the matrix values;
    ``compute`` factorises on the host (``jax.pure_callback``, so it works under ``jit``).
    Nonsingular square operators get an LU solve; all others (tall, wide, rank-deficient,
    singular) the minimum-norm least-squares solution. A non-finite matrix reports
    ``RESULTS.singular``. See
    [`sparseopt_adapters.SparseDirectSolver`][] for the factorisation details.

    Detection inside optimistix's traces sees a closure-converted ``fn`` whose constants are
    tracers; concrete constants are recovered where optimistix still holds them (so
    ``lx.JacobianLinearOperator`` of ``optx.Newton`` gets a tight pattern). A linearised
    operator (``optx.GaussNewton``, ``optx.LevenbergMarquardt``) carries index data computed
    inside the trace: gathers with such indices (``PatternMatrix`` products, fancy indexing)
    then get a sound but loose pattern. Pass ``pattern=`` for those.

    Args:
        pattern: The operator's pattern (``out_size × in_size``, operator input and output
            flattened in ``jax.tree.leaves`` order), a Jacobian ``ColoringResult``, or ``None`` to
            detect it. A pattern of ``J`` (``m × n``) also serves the ``(m + n) × n`` damped
            operator ``[J; √λ I]`` of ``optx.LevenbergMarquardt``.
        mode: Coloring mode: ``"auto"``, ``"forward"``, ``"reverse"`` or ``"bidirectional"``.

    Example:
        >>> import jax.numpy as jnp, optimistix as optx
        >>> from sparseopt_adapters import optimistix as sa_optx
        >>> def fn(y, args):  # a tridiagonal root-find
        ...     return 3.0 * y - jnp.pad(y[1:], (0, 1)) - jnp.pad(y[:-1], (1, 0)) - args
        >>> solver = optx.Newton(rtol=1e-10, atol=1e-10, linear_solver=sa_optx.SparseDirect())
        >>> sol = optx.root_find(fn, solver, jnp.zeros(5), jnp.array([2.0, 1.0, 1.0, 1.0, 2.0]))
        >>> sol.value
        Array([1., 1., 1., 1., 1.], dtype=float64)
    """

    pattern: SparsityPattern | None = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    coloring: ColoringResult | None = eqx.field(static=True)

    def __init__(self, pattern: SparsityPattern | ColoringResult | None = None, mode="auto"):
        if mode not in _JACOBIAN_MODES:
            raise ValueError(f"SparseDirect: mode must be one of {_JACOBIAN_MODES}, got {mode!r}.")
        if isinstance(pattern, ColoringResult):
            if pattern.mode not in _JACOBIAN_MODES:
                raise ValueError(
                    f"SparseDirect needs a Jacobian coloring (forward, reverse or "
                    f"bidirectional), got {pattern!r}. Color it with "
                    "sa.color_jacobian(pattern)."
                )
            coloring, pattern = pattern, pattern.pattern
        elif isinstance(pattern, SparsityPattern):
            coloring = color_jacobian(pattern, mode=mode, warn=False)
        elif pattern is None:
            coloring = None
        else:
            raise TypeError(
                f"SparseDirect: pattern must be a sa.SparsityPattern, a ColoringResult or None "
                f"(detect it), got {type(pattern).__name__}. Build one with "
                "sa.jacobian_sparsity(fn, y0, args) or sa.SparsityPattern.from_scipy(A)."
            )
        self.pattern = pattern
        self.mode = mode
        self.coloring = coloring

    def _coloring_for(self, operator) -> ColoringResult:
        m = flat_size(operator.out_structure())
        n = flat_size(operator.in_structure())
        if self.coloring is None:
            return color_jacobian(operator_pattern(operator), mode=self.mode, warn=False)
        pm, pn = self.coloring.pattern.shape
        if (pm, pn) == (m, n):
            return self.coloring
        if (pm + pn, pn) == (m, n):
            return damped_coloring(self.coloring)
        raise ValueError(
            f"SparseDirect was given a {pm}×{pn} pattern, but the operator maps {n} inputs to "
            f"{m} outputs (a {m}×{n} matrix). Pass the pattern of this operator (inputs and "
            "outputs flattened in jax.tree.leaves order), or pattern=None to detect it."
        )

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]):
        if not isinstance(operator, lx.AbstractLinearOperator):
            raise TypeError(
                f"SparseDirect.init needs a lineax operator, got {type(operator).__name__}."
            )
        solver = SparseDirectSolver(self._coloring_for(operator))
        return _SparseDirectState(solver, solver.init(operator, options))

    def compute(self, state: _SparseDirectState, vector, options):
        return state.solver.compute(state.inner, vector, options)

    def transpose(self, state: _SparseDirectState, options):
        inner, options = state.solver.transpose(state.inner, options)
        return _SparseDirectState(state.solver, inner), options

    def conj(self, state: _SparseDirectState, options):
        inner, options = state.solver.conj(state.inner, options)
        return _SparseDirectState(state.solver, inner), options

    def assume_full_rank(self) -> bool:
        return False
