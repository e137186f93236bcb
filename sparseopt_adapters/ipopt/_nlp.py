"""The host-independent half of the IPOPT adapter: a JAX NLP compiled once, evaluated by x.

[`_NLP`][] turns ``fun``, ``x0``, ``args``, bounds and constraints into the flat problem IPOPT
sees (``n`` variables, ``m`` constraint rows, bounds, structures) plus three ahead-of-time
compiled XLA executables, one per quantity IPOPT asks for:

- ``fc(z)``: objective and every constraint value, fused (IPOPT asks for both at each trial
  point);
- ``gj(z)``: objective gradient and constraint-Jacobian values in structure order (column-
  major: see `_ipopt_jacobian_order`), fused;
- ``h(z, sigma, lam)``: lower triangle of the Lagrangian Hessian in structure order.

Each returns ONE float64 vector (layout in [`_Layout`][]): the values followed by their
finiteness flags, computed inside the same XLA program. One output array is one zero-copy
``np.asarray`` on the host; the callbacks hand IPOPT slices of it (views, no copy). A pytree
of outputs cost 35–80 µs more per call in ``jax.device_get``. The decompression index
arrays are *arguments* of the executables, not constants baked into them (a baked constant of
1e5 indices is 0.8 MB of HLO text that XLA parses and folds at every compile).

The hot path (every IPOPT callback, measured by ``benchmarks/bench_ipopt.py --glue``): an
x-cache check (`XCache`: a ``memcmp``, or nothing when IPOPT's C interface says
``new_x=False``), on a miss one copy of ``x`` into an aligned buffer XLA reads in place and
one call of the compiled executable through JAX's C++ dispatch with already-placed
arguments, then slices of the result.

Setup paid once: the detection, colouring and the three executables live in a [`_Setup`][]
held by the setup cache (`_cache.cached`), keyed by the user's function objects, the shapes
and dtypes of ``x0`` and the traced arguments, the values of static arguments and integer
data, and whether a Hessian is built. Bounds, constraint limits, the starting point and the
traced argument values are per call. Reruns of a script can also skip XLA compilation with
JAX's persistent compilation cache: ``jax.config.update("jax_compilation_cache_dir", path)``
(plus ``jax_persistent_cache_min_compile_time_secs=0`` to store small executables).

No cyipopt here: the callbacks raise the exception class they are given, so the evaluation
engine can be tested and reused without IPOPT.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._cache import cached, structure_key
from .._coloring import color_hessian
from .._coloring._api import _maybe_warn as warn_if_dense
from .._compressed import sparse_jacobian, sparse_lagrangian_hessian
from .._detection import hessian_sparsity
from .._host import (
    Variables,
    XCache,
    canonical_bounds,
    compilations,
    normalize_constraints,
    require_x64,
    scalar_function,
    setup_key,
    split_args,
    static_key,
    vector_function,
    warn_ignored_derivatives,
)
from .._sharding import placement, solver_sharding

_QUANTITIES = ("objective", "constraints", "gradient", "jacobian", "hessian")
_PRETTY = {
    "objective": "the objective",
    "constraints": "the constraints",
    "gradient": "the objective gradient",
    "jacobian": "the constraint Jacobian",
    "hessian": "the Lagrangian Hessian",
}


# ---------------------------------------------------------------------------------------
# errors raised inside callbacks
# ---------------------------------------------------------------------------------------
class _NonFinite:
    """Book-keeping of NaN/inf values returned by the compiled functions."""

    def __init__(self):
        self.counts = dict.fromkeys(_QUANTITIES, 0)
        self.first: dict[str, int] = {}  # quantity -> iteration of the first occurrence
        self.fatal: str | None = None  # the derivative that stopped IPOPT

    def record(self, what: str, iteration: int):
        self.counts[what] += 1
        self.first.setdefault(what, iteration)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def describe(self) -> str:
        parts = []
        for q in _QUANTITIES:
            c = self.counts[q]
            if c:
                parts.append(
                    f"{_PRETTY[q]} returned NaN/inf {c} time{'s' if c > 1 else ''} (first at "
                    f"iteration {self.first[q]})"
                )
        msg = "; ".join(parts)
        if self.fatal is not None:
            return (
                f"{msg}. A non-finite derivative stops IPOPT. Check {_PRETTY[self.fatal]} at "
                "the last iterate (res.x), e.g. sqrt/log/division near 0, or add bounds that "
                "keep x in the domain."
            )
        return (
            f"{msg}. Such trial points are reported to IPOPT as evaluation errors and it cuts "
            "the step back."
        )


# ---------------------------------------------------------------------------------------
# the compiled setup (cached)
# ---------------------------------------------------------------------------------------
def _hessian_coloring(pattern):
    """Star coloring unless acyclic coloring at least halves the Hessian-vector products
    (the chosen coloring is returned, so the Lagrangian Hessian does not colour again).

    Acyclic decompression (substitution along trees) compiles to a much larger XLA program
    (about 1 s instead of 0.15 s for a tridiagonal Hessian, measured at n = 1e3 and 1e5) to
    save, typically, one product per call: star wins unless IPOPT runs very many iterations.
    """
    star = color_hessian(pattern, method="star", warn=False)
    chosen = star
    if star.n_colors > 3:
        acyclic = color_hessian(pattern, method="acyclic", warn=False)
        chosen = acyclic if 2 * acyclic.n_colors <= star.n_colors else star
    warn_if_dense(chosen, pattern.shape[0], "Hessian")
    return chosen


def _compile_all(lowered: dict) -> dict:
    """Compile the lowered executables (one by one: compiling them in threads was slower on
    the shared 2-core machine, 4.1 s instead of 2.2 s for COPS torsion at n = 1024)."""
    return {k: low.compile() for k, low in lowered.items()}


def _impl_and_index(obj, order=None):
    """The traceable values function of a compressed derivative and its index data, so the
    index arrays become arguments of our executable instead of baked constants.

    ``order``: a permutation of the values (``values[order]``). A plain gather
    decompression takes it for free (its gather indices are permuted here, once); otherwise
    the executable gathers the values itself.
    """
    plan = getattr(obj, "plan", None)
    if plan is not None:  # mesh=, split along the variables: the plan's SPMD values
        if order is None:
            return plan._values_impl, plan.arrays()
        perm = np.asarray(order, np.int32)  # numpy: placed with the mesh's arrays by jit
        return ((lambda idx, *a: plan._values_impl(idx["values"], *a)[idx["order"]]),
                {"values": plan.arrays(), "order": perm})
    impl = getattr(obj, "_values_impl", None)
    static = getattr(obj, "_static", None)
    if impl is None or static is None or not hasattr(static, "numpy"):  # pragma: no cover
        impl, index = (lambda index, *a: obj.values(*a)), {}
    else:
        index = static.numpy
    if order is not None:
        if isinstance(index, dict) and "gather" in index and "subst" not in index:
            index = dict(index, gather=np.asarray(index["gather"])[order])
        else:  # pragma: no cover - no other Jacobian decompression today
            inner = impl
            index = {"values": index, "order": np.asarray(order, np.int32)}
            impl = lambda idx, *a: inner(idx["values"], *a)[idx["order"]]  # noqa: E731
    return impl, jax.device_put(index)  # device_put: no compiled copy kernel


def _ipopt_jacobian_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The order in which IPOPT gets the Jacobian nonzeros: column-major (by column, then
    row), CasADi's (CCS) order. The values are the same either way, but MUMPS' analysis
    breaks ordering ties by the order of the entries it is given: on the control problem of
    benchmarks/bench_ipopt.py row-major entries gave 4.1 % more fill at n = 1e5 (8 025 252
    doubles in the factor against 7 710 129) and 1.2 % at 1e4, so each factorization cost
    more than CasADi's; column-major gives CasADi's factor exactly (Lukšan–Vlček: the same
    fill either way)."""
    return np.lexsort((rows, cols))


class _Setup:
    """Everything about an NLP that does not change between solves: the flat functions,
    the constraint block sizes, the sparsity structures and the compiled executables.

    Built once per setup-cache key (see the module docstring); shared by every `_NLP` (and
    so every `ipopt.Problem` / `ipopt.minimize` call) with the same key. Immutable after
    construction.
    """

    def __init__(self, fun, variables: Variables, args, cons, hessian: bool, caller: str,
                 mesh=None):
        t_setup = time.perf_counter()
        n0, s0 = compilations()
        v = variables
        dyn, static = split_args(args)
        cstatic, cdyn = [], []
        for con in cons:
            d, s = split_args(con.args)
            cdyn.append(d)
            cstatic.append(s)
        dyn_all = (dyn, tuple(cdyn))
        z0 = jax.device_put(v.x0)  # not jnp.asarray: that compiles a copy kernel

        fz = scalar_function(fun, v, static, caller, "Put vector conditions into constraints=...")
        blocks = [vector_function(con.fun, None if con.flat else v, cstatic[k], caller,
                                  f"{con.label} fun") for k, con in enumerate(cons)]

        def f(z, a):
            return fz(z, a[0])

        def c(z, a):
            if not blocks:
                return jnp.zeros((0,), jnp.float64)
            parts = [b(z, a[1][k]) for k, b in enumerate(blocks)]
            return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

        jax.eval_shape(f, z0, dyn_all)  # fail early, outside IPOPT
        self.block_sizes = [
            int(jax.eval_shape(lambda z, a, k=k: blocks[k](z, a[1][k]), z0, dyn_all).shape[0])
            for k in range(len(cons))
        ]
        self.block_offsets = np.concatenate([[0], np.cumsum(self.block_sizes, dtype=np.int64)])
        self.n = v.n
        self.m = int(self.block_offsets[-1])
        self.f, self.c = f, c

        # --- sparse derivatives: detection + coloring once -------------------------------
        t0 = time.perf_counter()
        if self.m:
            self.jac = sparse_jacobian(c, z0, dyn_all, mesh=mesh)
            jp = self.jac.pattern
            self.jac_order = _ipopt_jacobian_order(jp.rows, jp.cols)
            self.jac_rows = np.ascontiguousarray(jp.rows[self.jac_order], dtype=np.int32)
            self.jac_cols = np.ascontiguousarray(jp.cols[self.jac_order], dtype=np.int32)
        else:
            self.jac = None
            self.jac_order = None
            self.jac_rows = self.jac_cols = np.zeros(0, np.int32)
        self.has_hessian = bool(hessian)
        if self.has_hessian:
            pattern = hessian_sparsity(f, z0, dyn_all)
            if self.m:
                pattern = pattern.union(
                    hessian_sparsity(lambda z, a: jnp.sum(c(z, a)), z0, dyn_all))
            self.lag = sparse_lagrangian_hessian(
                f, c if self.m else None, z0, dyn_all, coloring=_hessian_coloring(pattern),
                mesh=mesh)
            hp = self.lag.lower_pattern
            self.hess_rows = np.ascontiguousarray(hp.rows, dtype=np.int32)
            self.hess_cols = np.ascontiguousarray(hp.cols, dtype=np.int32)
        else:
            self.lag = None
            self.hess_rows = self.hess_cols = np.zeros(0, np.int32)
        t1 = time.perf_counter()
        n1, s1 = compilations()

        # --- one compiled executable per quantity, index data as arguments ---------------
        def flags(*parts):
            return jnp.stack([jnp.all(jnp.isfinite(p)) for p in parts]).astype(jnp.float64)

        def fc(z, a):
            fv, cv = f(z, a), c(z, a)
            return jnp.concatenate([fv[None], cv, flags(fv, cv)])

        if self.jac is not None:
            jac_impl, jac_index = _impl_and_index(self.jac, self.jac_order)
        else:
            jac_impl, jac_index = None, {}

        def gj(z, a, index):
            g = jax.grad(f)(z, a)
            jv = (jac_impl(index, z, a) if jac_impl is not None
                  else jnp.zeros((0,), jnp.float64))
            return jnp.concatenate([g, jv, flags(g, jv)])

        # shapes only: no eager ops; mesh=: x arrives split over the mesh (issue 17)
        zs = jax.ShapeDtypeStruct(z0.shape, jnp.float64,
                                  sharding=None if mesh is None else solver_sharding(mesh, v.n))
        lowered = {"fc": jax.jit(fc).lower(zs, dyn_all),
                   "gj": jax.jit(gj).lower(zs, dyn_all, jac_index)}
        self.jac_index = jac_index
        self.hess_index = {}
        if self.has_hessian:
            hess = self.lag.hessian
            h_impl, h_index = _impl_and_index(hess)
            lower_pos = getattr(hess, "_lower_pos", None)
            if lower_pos is None:  # pragma: no cover - another SparseHessian layout
                lower_pos = hess.pattern.positions(hess.lower_pattern.rows,
                                                   hess.lower_pattern.cols)
            pos_dtype = np.int32 if hess.pattern.nnz < 2**31 else np.int64
            self.hess_index = {"values": h_index,
                               "lower": jax.device_put(np.asarray(lower_pos, pos_dtype))}
            lam0 = jax.ShapeDtypeStruct((self.m,), jnp.float64)
            sigma0 = jax.ShapeDtypeStruct((), jnp.float64)

            def h(z, sigma, lam, a, index):
                hv = h_impl(index["values"], z, sigma, lam, a)[index["lower"]]
                return jnp.concatenate([hv, flags(hv)])

            lowered["h"] = jax.jit(h).lower(zs, sigma0, lam0, dyn_all, self.hess_index)
        t_lowered = time.perf_counter()
        compiled = _compile_all(lowered)
        self._fc, self._gj = compiled["fc"], compiled["gj"]
        if self.has_hessian:
            self._h = compiled["h"]
        self.layout = _Layout(self.n, self.m, self.jac_rows.size, self.hess_rows.size)
        t2 = time.perf_counter()
        n2, s2 = compilations()
        self.setup_time = {
            "variables": t0 - t_setup,
            "sparsity_and_coloring": t1 - t0,
            "compile": t2 - t1,  # trace + lower (``lower``) and XLA compilation
            "lower": t_lowered - t1,
        }
        self.compilations = {
            "count": n2 - n0,
            "evaluators": n2 - n1,
            "seconds": s2 - s0,
        }


class _Layout:
    """Where each quantity sits in the flat output vector of each executable.

    ``fc``: ``[f, c (m), ok_f, ok_c]``; ``gj``: ``[g (n), J values (nnz_J), ok_g, ok_J]``;
    ``h``: ``[H values (nnz_H), ok_H]`` (``ok_*``: 1.0 when every entry is finite).
    """

    def __init__(self, n: int, m: int, nnz_jac: int, nnz_hess: int):
        self.f, self.c = 0, slice(1, 1 + m)
        self.ok_f, self.ok_c = 1 + m, 2 + m
        self.g, self.jac = slice(0, n), slice(n, n + nnz_jac)
        self.ok_g, self.ok_jac = n + nnz_jac, n + nnz_jac + 1
        self.hess, self.ok_hess = slice(0, nnz_hess), nnz_hess


def _placed(tree):
    """Array leaves as JAX arrays, once: a numpy argument would be converted at every call
    (a snapshot: the values the problem was built with)."""
    return jax.tree.map(
        lambda a: jax.device_put(np.array(a)) if isinstance(a, np.ndarray | np.generic) else a,
        tree)


def _setup_for(fun, variables, args, cons, hessian, caller, mesh=None) -> tuple[_Setup, bool]:
    """The cached `_Setup` for this problem, and whether it was built by this call."""
    fns = [fun]
    con_keys = []
    for con in cons:
        fns.extend(con.user_fns)
        d, s = split_args(con.args)
        con_keys.append((con.key, structure_key(d), static_key(s)))
    key = (setup_key(variables, args), tuple(con_keys), bool(hessian), mesh)
    built = []

    def build():
        built.append(True)
        return _Setup(fun, variables, args, cons, hessian, caller, mesh)

    return cached("ipopt.nlp", fns, key, build), bool(built)


# ---------------------------------------------------------------------------------------
# the NLP of one problem
# ---------------------------------------------------------------------------------------
class _NLP:
    """A JAX NLP in IPOPT's flat form with compiled, fused, x-cached evaluations.

    The evaluation methods (``objective`` ... ``hessian``) have cyipopt's signatures. Any
    exception, and NaN/inf in a derivative, is recorded and turned into ``error_cls`` (cyipopt's
    ``CyIpoptEvaluationError``) so that IPOPT stops; ``raise_pending`` re-raises the original
    after the solve. After the first failure every call fails at once.

    Attributes:
        setup: the shared compiled [`_Setup`][]; ``setup_cached`` says whether it came from
            the setup cache.
        setup_time: seconds this construction spent: ``variables``,
            ``sparsity_and_coloring``, ``compile`` (all 0 on a cache hit) and ``total``.
        compilations: XLA compilations this construction caused: ``count`` (all),
            ``evaluators`` (the executables IPOPT calls: 3 with a Hessian, 2 without),
            ``seconds``.
    """

    def __init__(
        self,
        fun,
        x0,
        args=(),
        *,
        bounds=None,
        constraints=(),
        hessian: bool = True,
        error_cls: type[Exception] = ArithmeticError,
        caller: str = "ipopt.Problem",
        mesh=None,
    ):
        t = time.perf_counter()
        require_x64(caller, "IPOPT")
        if not callable(fun):
            raise TypeError(f"{caller}: fun must be callable, got {type(fun).__name__}.")
        self.caller = caller
        self.error_cls = error_cls
        self.variables = v = Variables(x0, caller)
        self.n = v.n
        self.x0 = v.x0
        self.lb, self.ub = canonical_bounds(bounds, self.n, caller)
        self.constraint_blocks = cons = normalize_constraints(constraints, caller)
        warn_ignored_derivatives(cons, caller)
        mesh, place = placement(mesh, self.n, caller)  # the host buffer -> the mesh
        self.setup, built = _setup_for(fun, v, args, cons, hessian, caller, mesh)
        self.setup_cached = not built
        s = self.setup
        dyn, _ = split_args(args)
        self.dyn = _placed((dyn, tuple(split_args(con.args)[0] for con in cons)))
        self.block_sizes = s.block_sizes
        self.block_offsets = s.block_offsets
        self.m = s.m
        cl, cu = [], []
        for con, size in zip(cons, s.block_sizes, strict=True):
            lo, hi = con.limits(size, caller)
            cl.append(lo)
            cu.append(hi)
        self.cl = np.concatenate(cl) if cl else np.zeros(0)
        self.cu = np.concatenate(cu) if cu else np.zeros(0)
        self.jac = s.jac
        self.lag = s.lag
        self.has_hessian = s.has_hessian
        self.jac_rows, self.jac_cols = s.jac_rows, s.jac_cols
        self.hess_rows, self.hess_cols = s.hess_rows, s.hess_cols
        dyn_all, jidx, hidx = self.dyn, s.jac_index, s.hess_index
        fc, gj = s._fc, s._gj  # the compiled executables: JAX's C++ dispatch path
        self._fc = XCache(lambda x: fc(place(x), dyn_all))
        self._gj = XCache(lambda x: gj(place(x), dyn_all, jidx))
        self.layout = s.layout
        if s.has_hessian:
            h = s._h
            #: ``_h(x, sigma, lam)``: the flat Hessian output (values, then the finite flag)
            self._h = lambda x, sigma, lam: h(place(x), sigma, lam, dyn_all, hidx)
        if built:
            self.setup_time = dict(s.setup_time)
            self.compilations = dict(s.compilations)
        else:  # the detection, colouring and compilation were paid by an earlier call
            self.setup_time = {"variables": 0.0, "sparsity_and_coloring": 0.0, "compile": 0.0}
            self.compilations = {"count": 0, "evaluators": 0, "seconds": 0.0}
        self.setup_time["total"] = time.perf_counter() - t
        self.reset()

    # -- per-solve state ------------------------------------------------------------------
    def reset(self):
        self.error: BaseException | None = None
        self.error_where: str | None = None
        self.nonfinite = _NonFinite()
        self.iteration = 0
        self.calls = dict.fromkeys(_QUANTITIES, 0)
        self.evals = {"fc": 0, "gj": 0, "h": 0}
        self.seconds = dict.fromkeys(_QUANTITIES, 0.0)
        self._fc.reset()
        self._gj.reset()
        self._point = 0  # bumped at every new_x=True (see `_tag`)

    # -- failure handling -------------------------------------------------------------------
    def _fail(self, where: str, exc: BaseException):
        if self.error is None:
            self.error = exc
            self.error_where = where
        raise self.error_cls(f"{where} raised {type(exc).__name__}; IPOPT is stopped.")

    def raise_pending(self):
        """Re-raise the first exception a callback hit (original type and traceback)."""
        err = self.error
        if err is not None:
            self.error = None
            raise err

    def _guard(self):
        if self.error is not None:
            raise self.error_cls("an earlier callback failed; IPOPT is stopped.")

    def _nonfinite(self, what: str, fatal: bool):
        self.nonfinite.record(what, self.iteration)
        if fatal and self.nonfinite.fatal is None:
            self.nonfinite.fatal = what
        raise self.error_cls(f"{_PRETTY[what]} is not finite")

    # -- fused, x-cached evaluations (the hot path) -------------------------------------------
    def _tag(self, new_x):
        """The x-cache tag of this callback's point: ``None`` (compare ``x``) unless the
        caller passes IPOPT's ``new_x``; ``new_x=False`` means the point of the previous
        callback, so an x-cache filled since the last ``new_x=True`` hits without a compare."""
        if new_x is None:
            return None
        if new_x:
            self._point += 1
        return self._point

    def _cached(self, what, cache, key, x, new_x, part, ok, fatal):
        """One callback on a fused x-cached evaluation: the ``part`` of its flat output."""
        if self.error is not None:
            self._guard()
        t = time.perf_counter()
        self.calls[what] += 1
        try:
            before = cache.count
            out = cache(x, self._tag(new_x))
            if cache.count != before:
                self.evals[key] += 1
            if not out[ok]:
                self._nonfinite(what, fatal)
            return out[part]
        except self.error_cls:
            raise
        except BaseException as e:  # noqa: BLE001 - re-raised after the solve
            self._fail(f"the {what} callback", e)
        finally:
            self.seconds[what] += time.perf_counter() - t

    # -- cyipopt's callback signatures (``new_x``: IPOPT's flag, from the C backend) -------------
    def objective(self, x, new_x=None) -> float:
        lay = self.layout
        return float(self._cached("objective", self._fc, "fc", x, new_x, lay.f, lay.ok_f, False))

    def constraints(self, x, new_x=None) -> np.ndarray:
        lay = self.layout
        return self._cached("constraints", self._fc, "fc", x, new_x, lay.c, lay.ok_c, False)

    def gradient(self, x, new_x=None) -> np.ndarray:
        lay = self.layout
        return self._cached("gradient", self._gj, "gj", x, new_x, lay.g, lay.ok_g, True)

    def jacobian(self, x, new_x=None) -> np.ndarray:
        lay = self.layout
        return self._cached("jacobian", self._gj, "gj", x, new_x, lay.jac, lay.ok_jac, True)

    def jacobianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.jac_rows, self.jac_cols

    def hessianstructure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.hess_rows, self.hess_cols

    def hessian(self, x, lagrange, obj_factor, new_x=None) -> np.ndarray:
        if self.error is not None:
            self._guard()
        t = time.perf_counter()
        self.calls["hessian"] += 1
        try:
            if not self.has_hessian:
                raise RuntimeError(
                    f"{self.caller} was built without an exact Hessian "
                    "(hessian_approximation='limited-memory' in options), but IPOPT asked for "
                    "one. Build the problem with the exact-Hessian options, or keep "
                    "hessian_approximation='limited-memory'."
                )
            self._tag(new_x)  # keeps the point count in step with IPOPT's
            lam = lagrange if type(lagrange) is np.ndarray else np.asarray(lagrange, np.float64)
            out = np.asarray(self._h(x, np.float64(obj_factor), lam))
            self.evals["h"] += 1
            lay = self.layout
            if not out[lay.ok_hess]:
                self._nonfinite("hessian", fatal=True)
            return out[lay.hess]
        except self.error_cls:
            raise
        except BaseException as e:  # noqa: BLE001 - re-raised after the solve
            self._fail("the hessian callback", e)
        finally:
            self.seconds["hessian"] += time.perf_counter() - t

    # -- results ----------------------------------------------------------------------
    def split_constraints(self, g) -> list[Any]:
        """Flat constraint values -> one array per constraint block."""
        g = np.asarray(g)
        return [g[self.block_offsets[k]: self.block_offsets[k + 1]]
                for k in range(len(self.constraint_blocks))]

    def timing(self) -> dict[str, float]:
        t = {f"{q}_s": s for q, s in self.seconds.items()}
        t["callbacks_s"] = float(sum(self.seconds.values()))
        return t
