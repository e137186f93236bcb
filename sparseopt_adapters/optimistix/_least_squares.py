"""Gauss–Newton, Levenberg–Marquardt and Dogleg on colored sparse Jacobians.

Each solver is an ``optx.AbstractLeastSquaresSolver`` that, in ``init``, finds the Jacobian
pattern of ``fn`` (host side, once per trace; reused across traces through the setup cache),
colors it and picks a linear-solve route. It then delegates every ``step`` to optimistix's own
``GaussNewton`` / ``LevenbergMarquardt`` / ``Dogleg`` with that route's lineax solver: the
search, descent, termination and verbose logging are optimistix's, unchanged. Route names, the
``"auto"`` rule and the fallback are those of ``sparseopt_adapters._policy`` (shared with
``sa.GaussNewton``):

- ``"direct"``: the Jacobian operator optimistix linearises is assembled from one product per
  color and the minimum-norm least-squares step is computed by a sparse factorisation
  ([`sparseopt_adapters.SparseDirectSolver`][]): correct for rank-deficient and
  underdetermined ``J``.
- ``"cg"``: ``lineax.Normal(lineax.CG)``, conjugate gradients on ``JᵀJ (+ λI)``, matrix-free.
- ``"lsmr"``: ``lineax.LSMR`` on ``J``, matrix-free.
- ``"auto"``: ``_policy.choose_route`` on the detected pattern; a pattern denser than 25 %
  (with more than 16 columns) goes to ``"lsmr"`` without being colored.

A ``"direct"`` or ``"cg"`` step that comes out non-finite is recomputed by LSMR inside the same
solve (``_policy.fallback_route``); a ``RouteFallbackWarning`` (and, with ``verbose``, a
printed line) says so — an ``optx.Solution`` has no message of its own.
"""

from __future__ import annotations

import abc
import hashlib
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import PyTree, Scalar

from .. import _policy
from .._cache import cached
from .._coloring import ColoringResult, color_jacobian
from .._direct import damped_coloring
from .._errors import DenseColoringWarning
from .._gauss_newton import SparseDirectSolver, check_x64
from .._pattern import SparsityPattern
from ._detect import (
    MeshField,
    constrain_tree,
    flat_size,
    fn_pattern,
    recover_concrete_consts,
    split_known,
    structure_of,
)

_ROUTES = _policy.ROUTES


class Plan(eqx.Module):
    """What a sparse least-squares solver decided in ``init``: the static half of its state.

    Attributes:
        route: ``"direct"``, ``"cg"``, ``"lsmr"`` or ``"custom"`` (a user ``linear_solver``).
        coloring: The colored Jacobian pattern (``None`` when not needed).
        damped: The coloring of ``[J; I]`` for damped steps (``None`` when not needed).
    """

    route: str = eqx.field(static=True)
    coloring: ColoringResult | None = eqx.field(static=True)
    damped: ColoringResult | None = eqx.field(static=True)

    @property
    def pattern(self) -> SparsityPattern | None:
        return None if self.coloring is None else self.coloring.pattern

    @property
    def n_colors(self) -> int | None:
        return None if self.coloring is None else self.coloring.n_colors

    def __repr__(self) -> str:
        c = "" if self.coloring is None else f", {self.coloring!r}"
        return f"Plan(route={self.route!r}{c})"


class _State(eqx.Module):
    inner: Any
    plan: Plan = eqx.field(static=True)


def _leaf_digest(x) -> Any:
    if isinstance(x, jax.core.Tracer):
        return ("traced", tuple(x.shape), str(x.dtype))
    a = np.ascontiguousarray(np.asarray(x))
    return (a.shape, str(a.dtype), hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest())


def _plan_key(fn, y, args) -> Any:
    """A hashable key for the pattern of ``fn`` at ``y``'s structure: the program of ``fn``
    (its jaxpr as text) and the values of every concrete constant it reads (float data too:
    the zeros of a selection matrix decide the pattern); traced values by shape and dtype.

    ``init`` sees a new closure-converted ``fn`` on every trace, so the function object
    cannot be the key; the program it runs can."""
    fn = recover_concrete_consts(fn)
    rebuild, unknown = split_known((fn, args))

    def g(yy, unknowns):
        f, a = rebuild(unknowns)
        return f(yy, a)[0]

    with jax.ensure_compile_time_eval():
        closed = jax.make_jaxpr(g)(structure_of(y), unknown)
    return (
        str(closed.jaxpr),
        tuple(_leaf_digest(c) for c in closed.consts),
        jax.tree.structure(structure_of(y)),
        tuple((tuple(s.shape), str(s.dtype)) for s in jax.tree.leaves(structure_of(y))),
    )


class _WithFallback(lx.AbstractLinearSolver):
    """``primary``, and where its solution is not finite, ``fallback`` (inside the trace)."""

    primary: lx.AbstractLinearSolver
    fallback: lx.AbstractLinearSolver
    message: str = eqx.field(static=True)
    verbose: bool = eqx.field(static=True)

    def init(self, operator, options):
        return self.primary.init(operator, options), self.fallback.init(operator, options)

    def compute(self, state, vector, options):
        pstate, fstate = state
        x, result, _ = self.primary.compute(pstate, vector, options)
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(x)]))

        def keep():
            return x, result

        def fall_back():
            jax.debug.callback(self._announce)
            x2, result2, _ = self.fallback.compute(fstate, vector, options)
            return x2, result2

        x, result = jax.lax.cond(ok, keep, fall_back)
        return x, result, {}

    def _announce(self):
        if self.verbose:
            print(self.message)
        _policy.warn_fallback(self.message, stacklevel=2)

    def transpose(self, state, options):
        pstate, fstate = state
        pt, options = self.primary.transpose(pstate, options)
        ft, _ = self.fallback.transpose(fstate, options)
        return (pt, ft), options

    def conj(self, state, options):
        pstate, fstate = state
        pc, options = self.primary.conj(pstate, options)
        fc, _ = self.fallback.conj(fstate, options)
        return (pc, fc), options

    def assume_full_rank(self):
        return False


class _AbstractSparseLeastSquares(optx.AbstractLeastSquaresSolver):
    """Shared machinery (fields, constructor, planning, delegation); subclasses only say
    whether their steps are damped and which optimistix solver takes them."""

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar]
    route: str = eqx.field(static=True)
    pattern: SparsityPattern | None = eqx.field(static=True)
    linear_solver: lx.AbstractLinearSolver | None
    linear_rtol: float
    linear_atol: float
    linear_max_steps: int | None
    verbose: bool | Callable[..., None]
    mesh: MeshField = eqx.field(static=True)

    def __init__(
        self,
        rtol: float,
        atol: float,
        norm: Callable[[PyTree], Scalar] = optx.max_norm,
        *,
        route: str = "auto",
        pattern: SparsityPattern | None = None,
        linear_solver: lx.AbstractLinearSolver | None = None,
        linear_rtol: float = 1e-10,
        linear_atol: float = 1e-14,
        linear_max_steps: int | None = None,
        verbose: bool | Callable[..., None] = False,
        mesh=None,
    ):
        name = type(self).__name__
        route = _policy.check_route(route, name)
        self.mesh = MeshField.of(mesh, name)
        if linear_solver is not None and not isinstance(linear_solver, lx.AbstractLinearSolver):
            raise TypeError(
                f"{name}: linear_solver must be a lineax solver (e.g. lx.LSMR(rtol, atol)), got "
                f"{type(linear_solver).__name__}."
            )
        if pattern is not None and not isinstance(pattern, SparsityPattern):
            raise TypeError(
                f"{name}: pattern must be a sa.SparsityPattern of the Jacobian (e.g. from "
                f"sa.jacobian_sparsity(fn, y0, args)), got {type(pattern).__name__}."
            )
        self.rtol, self.atol, self.norm = rtol, atol, norm
        self.route, self.pattern, self.linear_solver = route, pattern, linear_solver
        self.linear_rtol, self.linear_atol = linear_rtol, linear_atol
        self.linear_max_steps = linear_max_steps
        self.verbose = verbose

    @abc.abstractmethod
    def _damped(self) -> bool:
        """Whether the inner solver solves damped systems ``[J; √λ I]``."""

    @abc.abstractmethod
    def _inner(self, linear_solver: lx.AbstractLinearSolver) -> optx.AbstractLeastSquaresSolver:
        """The optimistix solver that takes the steps."""

    # -- planning (host side, once per trace; cached across traces) ----------------------
    def _make_plan(self, fn, y, args, f_struct) -> Plan:
        if self.linear_solver is not None:
            return Plan("custom", None, None)
        if self.route in ("cg", "lsmr"):
            return Plan(self.route, None, None)
        m, n = flat_size(f_struct), flat_size(structure_of(y))
        if self.pattern is not None and self.pattern.shape != (m, n):
            raise ValueError(
                f"{type(self).__name__}: pattern has shape {self.pattern.shape}, but fn maps "
                f"{n} parameters to {m} residuals, so its Jacobian is {m}×{n} (y and the "
                "residual flattened in jax.tree.leaves order). Detect it with "
                "sa.jacobian_sparsity(fn, y0, args), or leave pattern=None."
            )
        try:
            key = (_plan_key(fn, y, args), self.route, self.pattern, self._damped(), m)
            hash(key)
        except Exception:  # noqa: BLE001 - an unkeyable fn is planned afresh, never wrongly
            return self._build_plan(fn, y, args, m, n)
        return cached("optimistix_plan", (), key, lambda: self._build_plan(fn, y, args, m, n))

    def _build_plan(self, fn, y, args, m, n) -> Plan:
        pattern = self.pattern
        if pattern is None:
            pattern = fn_pattern(fn, y, args)
        if self.route == "auto" and _policy.dense_pattern(pattern.nnz, m, n):
            return Plan("lsmr", None, None)  # no coloring can pay: skip computing one
        with warnings.catch_warnings():
            if self.route == "auto":  # a dense coloring is what "auto" is there to catch
                warnings.simplefilter("ignore", DenseColoringWarning)
            coloring = color_jacobian(pattern, mode="forward" if m >= n else "auto")
        route = self.route
        if route == "auto":
            route = _policy.choose_route(
                m=m, n=n, n_colors=coloring.n_colors, normal_nnz=_policy.gram_nnz(pattern)
            )
        if route != "direct":
            return Plan(route, coloring, None)
        damped = damped_coloring(coloring) if self._damped() else None
        return Plan("direct", coloring, damped)

    def _route_solver(self, route: str, plan: Plan) -> lx.AbstractLinearSolver:
        kw = dict(rtol=self.linear_rtol, atol=self.linear_atol, max_steps=self.linear_max_steps)
        if route == "custom":
            return self.linear_solver
        if route == "cg":
            return lx.Normal(lx.CG(**kw))
        if route == "lsmr":
            return lx.LSMR(**kw, conlim=1e14)
        return SparseDirectSolver(plan.damped if self._damped() else plan.coloring)

    def _linear_solver(self, plan: Plan) -> lx.AbstractLinearSolver:
        primary = self._route_solver(plan.route, plan)
        new = _policy.fallback_route(plan.route)
        if plan.route == "custom" or new is None:
            return primary
        message = (
            f"{type(self).__name__}: "
            + _policy.fallback_message(plan.route, new, "in a step")
            + " and carried on"
        )
        return _WithFallback(primary, self._route_solver(new, plan), message, self.verbose is True)

    def plan(self, fn: Callable, y0, args: PyTree = None, *, has_aux: bool = False) -> Plan:
        """The pattern, coloring and route this solver would use on ``fn`` at ``y0``.

        Runs the same host-side work as a solve (useful to inspect or check the route); the
        arguments are those of ``optx.least_squares``.

        Returns:
            A [`Plan`][sparseopt_adapters.optimistix.Plan].
        """
        f = fn if has_aux else (lambda y, a: (fn(y, a), None))
        y0 = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x, float)), y0)
        f_struct = jax.eval_shape(lambda: f(y0, args)[0])
        args_struct = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
            if eqx.is_array(x) else x,
            args,
        )
        return self._make_plan(f, y0, args_struct, f_struct)

    # -- the optimistix solver interface -------------------------------------------------
    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        check_x64(f"sa_optx.{type(self).__name__}")
        plan = self._make_plan(fn, y, args, f_struct)
        inner = self._inner(self._linear_solver(plan))
        y = constrain_tree(y, self.mesh, _calls_host(plan))
        return _State(inner.init(fn, y, args, options, f_struct, aux_struct, tags), plan)

    def step(self, fn, y, args, options, state, tags):
        inner = self._inner(self._linear_solver(state.plan))
        host = _calls_host(state.plan)
        y = constrain_tree(y, self.mesh, host)  # mesh=: the loop carries y split
        y, inner_state, aux = inner.step(fn, y, args, options, state.inner, tags)
        return constrain_tree(y, self.mesh, host), _State(inner_state, state.plan), aux

    def terminate(self, fn, y, args, options, state, tags):
        inner = self._inner(self._linear_solver(state.plan))
        return inner.terminate(fn, y, args, options, state.inner, tags)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        inner = self._inner(self._linear_solver(state.plan))
        y, aux, stats = inner.postprocess(fn, y, aux, args, options, state.inner, tags, result)
        return constrain_tree(y, self.mesh, _calls_host(state.plan)), aux, stats


def _calls_host(plan: Plan) -> bool:
    """Whether a step of ``plan`` calls the host from inside the compiled loop (the sparse
    factorisation of the direct route; a user ``linear_solver`` may)."""
    return plan.route in ("direct", "custom")


class GaussNewton(_AbstractSparseLeastSquares):
    """Gauss–Newton with a colored sparse Jacobian, for ``optx.least_squares`` and
    ``optx.root_find``.

    Full Gauss–Newton steps (like ``optx.GaussNewton``); prefer
    [`LevenbergMarquardt`][sparseopt_adapters.optimistix.LevenbergMarquardt] far from a
    solution. ``y0`` may be any pytree of arrays and
    [`PatternMatrix`][sparseopt_adapters.PatternMatrix] parameters.

    The Jacobian pattern is detected once per trace with the constants ``fn`` closes over
    taken by value; ``args`` are unknown values (the pattern holds for every ``args``), so keep
    data whose zeros matter (selection matrices, index arrays) in the closure, or pass
    ``pattern=``.

    Args:
        rtol: Relative tolerance for terminating the solve (as in optimistix).
        atol: Absolute tolerance for terminating the solve.
        norm: The norm of the termination test (default ``optx.max_norm``).
        route: ``"auto"``, ``"direct"``, ``"cg"`` or ``"lsmr"`` (see the module docstring).
        pattern: The Jacobian pattern (residual × parameters, both flattened in
            ``jax.tree.leaves`` order) to skip detection.
        linear_solver: Any lineax solver; overrides ``route`` (no detection is done).
        linear_rtol: Relative tolerance of the iterative routes.
        linear_atol: Absolute tolerance of the iterative routes.
        linear_max_steps: Iteration cap of the iterative routes (default: lineax's).
        verbose: As in optimistix: ``True``, ``False`` or a callable.
        mesh: A `jax.sharding.Mesh` (or a list of devices): ``y`` and everything computed
            from it (residual, linear-solve vectors, the assembled Jacobian's products) run
            split over it (see ``docs/sharding.md``); ``None``: one device.

    Example:
        >>> import jax.numpy as jnp, optimistix as optx
        >>> from sparseopt_adapters import optimistix as sa_optx
        >>> def fn(y, args):  # Rosenbrock chain as least squares
        ...     return jnp.concatenate([10.0 * (y[1:] - y[:-1] ** 2), 1.0 - y[:-1]])
        >>> sol = optx.least_squares(fn, sa_optx.GaussNewton(rtol=1e-8, atol=1e-8), jnp.zeros(6))
        >>> sol.value
        Array([1., 1., 1., 1., 1., 1.], dtype=float64)
    """

    def _damped(self) -> bool:
        return False

    def _inner(self, linear_solver):
        return optx.GaussNewton(
            self.rtol, self.atol, self.norm, linear_solver=linear_solver, verbose=self.verbose
        )


class LevenbergMarquardt(_AbstractSparseLeastSquares):
    """Levenberg–Marquardt with a colored sparse Jacobian (``optx.LevenbergMarquardt``'s
    trust-region damping; each damped step ``[J; √λ I] δ = [r; 0]`` is solved on the chosen
    route: sparse direct on ``JᵀJ + λI``, or matrix-free).

    The robust default for nonlinear least squares; see
    [`GaussNewton`][sparseopt_adapters.optimistix.GaussNewton] for patterns and ``args``.

    Args:
        rtol: Relative tolerance for terminating the solve (as in optimistix).
        atol: Absolute tolerance for terminating the solve.
        norm: The norm of the termination test (default ``optx.max_norm``).
        route: ``"auto"``, ``"direct"``, ``"cg"`` or ``"lsmr"`` (see the module docstring).
        pattern: The Jacobian pattern (residual × parameters, both flattened in
            ``jax.tree.leaves`` order) to skip detection.
        linear_solver: Any lineax solver; overrides ``route`` (no detection is done).
        linear_rtol: Relative tolerance of the iterative routes.
        linear_atol: Absolute tolerance of the iterative routes.
        linear_max_steps: Iteration cap of the iterative routes (default: lineax's).
        verbose: As in optimistix: ``True``, ``False`` or a callable.
        mesh: A `jax.sharding.Mesh` (or a list of devices): ``y`` and everything computed
            from it (residual, linear-solve vectors, the assembled Jacobian's products) run
            split over it (see ``docs/sharding.md``); ``None``: one device.

    Example:
        >>> import jax.numpy as jnp, optimistix as optx
        >>> from sparseopt_adapters import optimistix as sa_optx
        >>> t = jnp.linspace(0.0, 1.0, 8)
        >>> def fn(y, args):  # fit a * exp(b t) to data
        ...     return y["a"] * jnp.exp(y["b"] * t) - args
        >>> y0 = {"a": jnp.array(1.0), "b": jnp.array(0.0)}
        >>> solver = sa_optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10)
        >>> sol = optx.least_squares(fn, solver, y0, 2.0 * jnp.exp(-1.5 * t))
        >>> round(float(sol.value["a"]), 6), round(float(sol.value["b"]), 6)
        (2.0, -1.5)
    """

    def _damped(self) -> bool:
        return True

    def _inner(self, linear_solver):
        return optx.LevenbergMarquardt(
            self.rtol, self.atol, self.norm, linear_solver=linear_solver, verbose=self.verbose
        )


class Dogleg(_AbstractSparseLeastSquares):
    """Dogleg trust-region method (``optx.Dogleg``) whose Gauss–Newton point is computed on
    the colored sparse Jacobian; see
    [`GaussNewton`][sparseopt_adapters.optimistix.GaussNewton] for patterns and ``args``.

    Args:
        rtol: Relative tolerance for terminating the solve (as in optimistix).
        atol: Absolute tolerance for terminating the solve.
        norm: The norm of the termination test (default ``optx.max_norm``).
        route: ``"auto"``, ``"direct"``, ``"cg"`` or ``"lsmr"`` (see the module docstring).
        pattern: The Jacobian pattern (residual × parameters, both flattened in
            ``jax.tree.leaves`` order) to skip detection.
        linear_solver: Any lineax solver; overrides ``route`` (no detection is done).
        linear_rtol: Relative tolerance of the iterative routes.
        linear_atol: Absolute tolerance of the iterative routes.
        linear_max_steps: Iteration cap of the iterative routes (default: lineax's).
        verbose: As in optimistix: ``True``, ``False`` or a callable.
        mesh: A `jax.sharding.Mesh` (or a list of devices): ``y`` and everything computed
            from it (residual, linear-solve vectors, the assembled Jacobian's products) run
            split over it (see ``docs/sharding.md``); ``None``: one device.

    Example:
        >>> import jax.numpy as jnp, optimistix as optx
        >>> from sparseopt_adapters import optimistix as sa_optx
        >>> fn = lambda y, args: jnp.concatenate([y[1:] - y[:-1] ** 2, y[:1] - 2.0])
        >>> sol = optx.root_find(fn, sa_optx.Dogleg(rtol=1e-10, atol=1e-10), jnp.ones(4))
        >>> sol.value
        Array([  2.,   4.,  16., 256.], dtype=float64)
    """

    def _damped(self) -> bool:
        return False

    def _inner(self, linear_solver):
        return optx.Dogleg(
            self.rtol, self.atol, self.norm, linear_solver=linear_solver, verbose=self.verbose
        )
