"""What every host adapter (``ipopt``, ``scipy``) shares: one place per boundary decision.

- [`Variables`][]: the host's flat float64 vector <-> the user's ``x`` (array or pytree).
- [`split_args`][]: array leaves of ``args`` are traced, everything else is static.
- [`canonical_bounds`][] and [`normalize_constraints`][]: scipy's bound and constraint
  spellings -> one canonical form, validated with the same messages everywhere.
- [`require_x64`][], [`as_float_vector`][], [`to_numpy`][]: float64 at the boundary.
- [`scalar_function`][], [`vector_function`][]: the user's function on the flat vector, with
  its output checked (shape, a floating dtype: an integer/bool-valued function has no
  derivative, and ``jax.grad`` raises on one, so we do too).
- [`XCache`][]: evaluate a fused compiled function once per distinct ``x``.
- [`setup_key`][]: the setup-cache key of a problem (see `_cache.py`): shapes/dtypes of what
  is traced, values of what is closed over.

This is core: it imports no solver package (``scipy.optimize`` only inside the functions
that receive scipy objects, which the user has imported already).

Example:
    >>> import numpy as np
    >>> from sparseopt_adapters._host import Variables, canonical_bounds
    >>> v = Variables(np.zeros((2, 3)), "demo")
    >>> v.n, v.result_x(np.arange(6.0)).shape
    (6, (2, 3))
    >>> canonical_bounds([(0, None)] * 6, 6, "demo")[1][:2]
    array([inf, inf])
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import monitoring
from jax.flatten_util import ravel_pytree

from ._cache import structure_key
from ._parametrization import PatternMatrix, ravel_parameters, unwrap_fixed


# ---------------------------------------------------------------------------------------
# float64 at the boundary
# ---------------------------------------------------------------------------------------
def require_x64(caller: str, solver: str) -> None:
    """Raise unless JAX float64 is on (the hosts are double-precision solvers)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{caller}: JAX float64 is off (jax_enable_x64=False); {solver} needs double "
            "precision. Unset SPARSEOPT_NO_X64 or call "
            "jax.config.update('jax_enable_x64', True) before building the problem."
        )


def as_float_vector(x, n: int, what: str) -> np.ndarray:
    """A float64 vector of shape ``(n,)`` from what a host sends (int8 probes, lists...)."""
    a = np.asarray(x)
    if a.dtype != np.float64:
        if np.issubdtype(a.dtype, np.complexfloating):
            raise TypeError(
                f"{what}: got a complex vector; the derivatives are real. Pass real vectors."
            )
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"{what}: expected a real vector of length {n}, got dtype {a.dtype}.")
        a = a.astype(np.float64)
    if a.shape != (n,):
        if a.size == n:
            a = a.reshape(n)
        else:
            raise ValueError(
                f"{what}: expected a vector of {n} entries (the flat parameters), got shape "
                f"{a.shape}."
            )
    return a


def to_numpy(v) -> np.ndarray:
    """A writable float64 numpy copy (hosts scale arrays in place)."""
    return np.array(v, dtype=np.float64, copy=True)


# ---------------------------------------------------------------------------------------
# variables: the host's flat float64 vector <-> the user's x
# ---------------------------------------------------------------------------------------
def is_plain_array(x0) -> bool:
    """An array-like ``x0`` (reshaped, not flattened as a pytree)."""
    if isinstance(x0, np.ndarray | jax.Array):
        return True
    if isinstance(x0, float | int | np.floating | np.integer):
        return True
    if isinstance(x0, list | tuple):
        try:
            a = np.asarray(x0)
        except (ValueError, TypeError):
            return False
        return a.dtype != object and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_)
    return False


class Variables:
    """The host's flat float64 vector and the user's ``x`` (an array or a pytree).

    A plain array ``x0`` (any shape, any real dtype) is reshaped; a pytree is flattened with
    ``ravel_parameters`` (``sa.Fixed`` nodes and integer leaves are not variables).
    """

    def __init__(self, x0, caller: str):
        self.plain = is_plain_array(x0)
        if self.plain:
            a = np.asarray(x0)
            if np.issubdtype(a.dtype, np.complexfloating):
                raise TypeError(
                    f"{caller}: x0 is complex; the solvers are real. Split it into real and "
                    "imaginary parts."
                )
            self.shape = a.shape
            self.x0 = np.array(a, dtype=np.float64).reshape(-1)
            shape = self.shape
            self._unravel = lambda z: jnp.reshape(z, shape)
            self.key: Hashable = ("plain", shape)
        else:
            try:
                flat, unravel = ravel_parameters(x0)
            except TypeError as e:
                raise TypeError(f"{caller}: could not flatten x0: {e}") from e
            self.x0 = np.array(flat, dtype=np.float64)
            self._unravel = unravel
            self.key = ("tree", _x0_key(x0))
        self.n = int(self.x0.size)
        if self.n == 0:
            raise ValueError(
                f"{caller}: x0 has no floating-point entries to optimise (integer leaves and "
                "sa.Fixed(...) nodes are not variables)."
            )

    def to_user(self, z):
        """Traceable: flat vector -> what the user's functions take."""
        return self._unravel(z) if self.plain else unwrap_fixed(self._unravel(z))

    def result_x(self, z):
        """Flat vector -> x in x0's structure (numpy for a plain array x0)."""
        z = np.array(z, dtype=np.float64)
        if self.plain:
            return z.reshape(self.shape)
        return self._unravel(jnp.asarray(z))

    def flatten(self, x, what: str) -> np.ndarray:
        """A user-supplied point (flat vector, x0-shaped array or x0-like pytree) -> flat."""
        if not self.plain and not is_plain_array(x):
            try:
                flat, _ = ravel_parameters(x)
            except TypeError as e:
                raise TypeError(f"{what}: could not flatten {type(x).__name__}: {e}") from e
            x = flat
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.size != self.n:
            raise ValueError(
                f"{what}: expected {self.n} values (the flat variables, in ravel_parameters "
                f"order) or a point shaped like x0, got {a.size}."
            )
        return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------
# args: traced arrays and static values
# ---------------------------------------------------------------------------------------
def split_args(args) -> tuple[Any, Any]:
    """``(dyn, static)``: array leaves (traced, passed to compiled code) and the rest."""
    if not isinstance(args, tuple):
        args = (args,)
    return eqx.partition(args, eqx.is_array)


# ---------------------------------------------------------------------------------------
# the user's functions on the flat vector, outputs checked
# ---------------------------------------------------------------------------------------
def check_float_output(out, caller: str, what: str) -> None:
    """Refuse an integer- or bool-valued function: it has no derivative."""
    dtype = jnp.result_type(out)
    if not jnp.issubdtype(dtype, jnp.floating):
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{caller}: {what} returns complex values (dtype {dtype}); the solvers are "
                "real. Return the real quantity, e.g. jnp.abs(z) ** 2."
            )
        raise TypeError(
            f"{caller}: {what} returns dtype {dtype}, not a floating-point value: an integer- "
            "or bool-valued function has a zero or undefined derivative (jax.grad refuses "
            "it). Return floats (remove .astype(int) / comparisons from the returned value)."
        )


def scalar_function(fun, variables: Variables, static, caller: str, hint: str):
    """``fz(z, dyn) -> float64 scalar``: ``fun`` on the flat vector, output checked."""
    if not callable(fun):
        raise TypeError(f"{caller}: fun must be callable, got {type(fun).__name__}.")

    def fz(z, dyn):
        out = jnp.asarray(fun(variables.to_user(z), *eqx.combine(dyn, static)))
        if out.size != 1:
            raise ValueError(
                f"{caller}: fun must return a scalar, got an array of shape {out.shape}. "
                f"{hint}"
            )
        check_float_output(out, caller, "fun")
        return jnp.reshape(out, ()).astype(jnp.float64)

    return _traced_once(fz)


def vector_function(fun, variables: Variables | None, static, caller: str, what: str):
    """``rz(z, dyn) -> 1-D float64`` (outputs raveled); ``variables=None``: ``fun`` takes
    the flat vector itself (a linear constraint)."""
    if not callable(fun):
        raise TypeError(f"{caller}: {what} must be callable, got {type(fun).__name__}.")

    def rz(z, dyn):
        x = z if variables is None else variables.to_user(z)
        out = ravel_pytree(fun(x, *eqx.combine(dyn, static)))[0]
        check_float_output(out, caller, what)
        return out.astype(jnp.float64)

    return _traced_once(rz)


def _traced_once(fn):
    """``fn`` behind `jax.jit` (``inline=True``), never called on its own: JAX caches its
    trace (per argument shapes), so the setup's detection, shape checks, products and every
    compiled evaluator transform one jaxpr of the user's function instead of running its
    Python again (7 traces of ``fun`` and 12 of each constraint per `ipopt.minimize` setup
    before). Inlined, the jaxpr's equations land in each caller's program as if ``fn`` had
    been traced there: no nested call for detection to fold (a call whose inputs are all
    known was evaluated, i.e. compiled, whole) and none in the lowered code."""
    return jax.jit(fn, inline=True)


# ---------------------------------------------------------------------------------------
# bounds and constraints
# ---------------------------------------------------------------------------------------
def broadcast_limits(value, size: int, what: str) -> np.ndarray:
    """A scalar or length-``size`` limit -> a float64 array of ``size`` entries."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be numbers or arrays of numbers, got {value!r}.") from None
    if a.ndim == 0:
        return np.full(size, float(a))
    a = a.reshape(-1)
    if a.size == 1:
        return np.full(size, float(a[0]))
    if a.size != size:
        raise ValueError(
            f"{what} has {a.size} entries, but {size} are needed (one per "
            f"{'variable' if 'ound' in what else 'constraint row'}, or a scalar)."
        )
    return np.array(a)


def check_order(lo, hi, what: str) -> None:
    """Raise if some ``lo > hi`` (or either is NaN)."""
    bad = np.flatnonzero(~(lo <= hi))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{what}: lower bound > upper bound (or NaN) at entry {k}: "
            f"{lo[k]!r} > {hi[k]!r} ({bad.size} bad entr{'y' if bad.size == 1 else 'ies'}). "
            "Swap them or fix the NaN."
        )


def _is_bounds(obj) -> bool:
    return type(obj).__name__ == "Bounds" and hasattr(obj, "lb") and hasattr(obj, "ub")


def canonical_bounds(bounds, n: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.optimize.Bounds`` / ``(lo, hi)`` pairs / ``None`` -> validated ``(lo, hi)``."""
    if bounds is None:
        return np.full(n, -np.inf), np.full(n, np.inf)
    if _is_bounds(bounds):
        lo = broadcast_limits(bounds.lb, n, f"{caller}: Bounds.lb")
        hi = broadcast_limits(bounds.ub, n, f"{caller}: Bounds.ub")
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            raise TypeError(
                f"{caller}: bounds must be scipy.optimize.Bounds or a sequence of (lo, hi) "
                f"pairs, got {type(bounds).__name__}."
            ) from None
        if len(pairs) != n:
            raise ValueError(
                f"{caller}: bounds has {len(pairs)} (lo, hi) pairs, but there are {n} "
                "variables (flat, in ravel_parameters order). Pass one pair per variable, or "
                "scipy.optimize.Bounds(lb, ub) with scalar or length-n lb/ub."
            )
        try:
            lo = np.array([-np.inf if p[0] is None else p[0] for p in pairs], dtype=np.float64)
            hi = np.array([np.inf if p[1] is None else p[1] for p in pairs], dtype=np.float64)
        except (TypeError, IndexError, ValueError):
            raise TypeError(
                f"{caller}: each bound must be a (lo, hi) pair of numbers or None, got "
                f"{pairs[:3]!r}..."
            ) from None
    check_order(lo, hi, f"{caller}: bounds")
    return lo, hi


class Constraint:
    """One constraint block ``lb <= fun(x, *args) <= ub`` in canonical form.

    Attributes:
        fun: the user's function (``x`` in x0's structure), or for a linear constraint the
            map ``z -> A z`` on the flat vector (``flat=True``).
        args: its extra arguments (a tuple).
        lb, ub: the limits as given (scalars or arrays; see `limits`).
        label: ``"constraints[k]"``, for messages.
        kind: ``"nonlinear"``, ``"linear"`` or ``"dict"``.
        jac, hess: derivatives the user supplied (``None`` if not); each adapter decides.
        keep_feasible: scipy's flag (``False`` for dicts).
        original: the object the user passed.
    """

    def __init__(self, fun, args, lb, ub, label, kind, *, jac=None, hess=None,
                 keep_feasible=False, original=None, key=None):
        self.fun = fun
        self.args = args
        self.lb = lb
        self.ub = ub
        self.label = label
        self.kind = kind
        self.flat = kind == "linear"
        self.jac = jac
        self.hess = hess
        self.keep_feasible = keep_feasible
        self.original = original
        self.user_fns = () if kind == "linear" else (fun,)
        self.key = key  # the part of the setup key this block adds (besides user_fns)

    def limits(self, size: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(lb, ub)`` arrays of ``size`` entries."""
        lo = broadcast_limits(self.lb, size, f"{caller}: {self.label} lb")
        hi = broadcast_limits(self.ub, size, f"{caller}: {self.label} ub")
        check_order(lo, hi, f"{caller}: {self.label}")
        return lo, hi


def linear_fun(A):
    """``z -> A @ z`` for a dense or scipy-sparse ``A`` (sparse stays a PatternMatrix)."""
    if sp.issparse(A):
        M = PatternMatrix.from_scipy(sp.csr_array(A, dtype=np.float64))
        return lambda z: M @ z
    A = jnp.asarray(np.asarray(A, dtype=np.float64))
    if A.ndim == 1:
        A = A[None, :]
    return lambda z: A @ z


def _digest(*arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _matrix_key(A) -> Hashable:
    if sp.issparse(A):
        A = sp.csr_array(A)
        return ("sparse", A.shape, _digest(A.data, A.indices, A.indptr))
    return ("dense", _digest(np.asarray(A, dtype=np.float64)))


def normalize_constraints(constraints, caller: str) -> list[Constraint]:
    """scipy's constraint spellings -> a list of [`Constraint`][], validated.

    Accepts ``NonlinearConstraint``, ``LinearConstraint``, dicts ``{'type': 'eq'|'ineq',
    'fun': ..., 'args': ..., 'jac': ...}`` (``ineq`` meaning ``fun >= 0``), or a list of them.
    """
    if constraints is None:
        return []
    import scipy.optimize as so  # the user passes scipy objects: scipy is imported already

    if isinstance(constraints, dict | so.NonlinearConstraint | so.LinearConstraint):
        constraints = [constraints]
    out = []
    for k, con in enumerate(constraints):
        label = f"constraints[{k}]"
        if isinstance(con, so.NonlinearConstraint):
            if not callable(con.fun):
                raise TypeError(f"{caller}: {label}: fun must be callable, got "
                                f"{type(con.fun).__name__}.")
            # scipy stores BFGS() when hess=None, so a BFGS instance means "not given"
            hess = None if con.hess is None or isinstance(con.hess, so.BFGS) else con.hess
            out.append(Constraint(
                con.fun, (), con.lb, con.ub, label, "nonlinear",
                jac=con.jac if callable(con.jac) else None, hess=hess,
                keep_feasible=con.keep_feasible, original=con, key=("nonlinear",)))
        elif isinstance(con, so.LinearConstraint):
            out.append(Constraint(
                linear_fun(con.A), (), con.lb, con.ub, label, "linear",
                keep_feasible=con.keep_feasible, original=con,
                key=("linear", _matrix_key(con.A))))
        elif isinstance(con, dict):
            unknown = set(con) - {"type", "fun", "args", "jac"}
            if unknown:
                raise ValueError(
                    f"{caller}: {label} has unknown keys {sorted(unknown)}; a constraint dict "
                    "has 'type' ('eq' or 'ineq'), 'fun' and optionally 'args' and 'jac'."
                )
            kind = con.get("type")
            if kind not in ("eq", "ineq"):
                raise ValueError(
                    f"{caller}: {label}['type'] must be 'eq' or 'ineq' (meaning fun >= 0), got "
                    f"{kind!r}."
                )
            if "fun" not in con or not callable(con["fun"]):
                raise TypeError(f"{caller}: {label} needs a callable 'fun'.")
            args = con.get("args", ())
            if not isinstance(args, tuple):
                args = (args,)
            ub = 0.0 if kind == "eq" else np.inf
            jac = con.get("jac")
            out.append(Constraint(
                con["fun"], args, 0.0, ub, label, "dict",
                jac=jac if callable(jac) else None, original=con, key=("dict", kind)))
        else:
            raise TypeError(
                f"{caller}: {label} is a {type(con).__name__}; expected a "
                "scipy.optimize.NonlinearConstraint(fun, lb, ub), "
                "scipy.optimize.LinearConstraint(A, lb, ub) or a dict "
                "{'type': 'eq' | 'ineq', 'fun': fun, 'args': (...)}."
            )
    return out


def warn_ignored_derivatives(cons: list[Constraint], caller: str) -> None:
    """For adapters that always differentiate with JAX: say that user jac/hess are unused."""
    for con in cons:
        if con.jac is not None or con.hess is not None:
            warnings.warn(
                f"{caller}: {con.label} has a user jac/hess; they are ignored: "
                "sparseopt_adapters differentiates fun with JAX.",
                UserWarning,
                stacklevel=4,
            )


# ---------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------
#: scipy.optimize option names whose value must be an integer / a real number.
INT_OPTIONS = frozenset({
    "maxiter", "maxfun", "maxfev", "maxls", "maxcor", "max_nfev", "verbose", "iprint",
    "maxCGit", "max_iter", "maxev", "nfev",
})
REAL_OPTIONS = frozenset({
    "gtol", "ftol", "xtol", "eps", "tol", "barrier_tol", "initial_tr_radius",
    "initial_constr_penalty", "initial_barrier_parameter", "initial_barrier_tolerance",
    "fatol", "xatol", "rhobeg", "catol", "pgtol", "accuracy", "eta", "stepmx", "rescale",
    "offset", "initial_trust_radius", "max_trust_radius", "factr", "finite_diff_rel_step",
    "f_scale",
})


def check_options(options, caller: str, where: str | None = "options") -> dict:
    """A dict of solver options with integer/real values of the right type (clear errors
    instead of a raw ``'>=' not supported`` deep inside the solver)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(
            f"{caller}: {where} must be a dict or None, got {type(options).__name__}."
        )
    for k, v in options.items():
        label = f"{where}[{k!r}]" if where else f"{k}="
        if k in INT_OPTIONS and v is not None:
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                fix = (f" (e.g. {int(float(v))}, not {v!r})" if _int_like(v) else "")
                raise TypeError(
                    f"{caller}: {label} must be an integer{fix}, got {type(v).__name__} "
                    f"{v!r}."
                )
        elif k in REAL_OPTIONS and v is not None:
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise TypeError(
                    f"{caller}: {label} must be a real number, got {type(v).__name__} {v!r}."
                )
    return dict(options)


def _int_like(v) -> bool:
    try:
        return float(v) == int(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


# ---------------------------------------------------------------------------------------
# the fused, x-cached evaluator
# ---------------------------------------------------------------------------------------
def _libc_memcmp():
    """libc's ``memcmp`` through ctypes (0.5 µs when two vectors differ in their first
    entries, 17 µs for two equal 1e5-vectors, where ``np.array_equal`` takes 22 µs either
    way), or ``None`` where there is no C library to load."""
    import ctypes
    import ctypes.util

    for name in (None, ctypes.util.find_library("c"), "msvcrt"):
        try:
            fn = ctypes.CDLL(name).memcmp
        except (OSError, AttributeError, TypeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        return fn
    return None  # pragma: no cover - no C library


_MEMCMP = _libc_memcmp()


def aligned_empty(n: int, dtype=np.float64, align: int = 64) -> np.ndarray:
    """An uninitialised 1-D array whose data starts on an ``align``-byte boundary (XLA's
    CPU client then reads it in place instead of copying it into a buffer of its own)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start: start + n * itemsize].view(dtype)


class XCache:
    """``fn(x)`` computed once per distinct ``x`` (hosts ask for f and c, or ∇f and J, at
    the same point): one compiled call, one transfer, reused until ``x`` changes.

    The hot path of every host callback, so it costs a few microseconds on a hit: ``x`` is
    compared with the cached point bit for bit (``memcmp``: it stops at the first differing
    byte, so a new point is seen at once), or not at all when the caller passes the same
    ``tag`` as for the cached evaluation (IPOPT's C interface says ``new_x=False``: the
    point of the previous callback). On a miss ``x`` is copied into the cache's own
    64-byte-aligned buffer, which ``fn`` receives (XLA's CPU client reads an aligned array
    in place); ``fn`` must not return its argument itself. A single ``jax.Array`` result is
    turned into numpy without a copy (``np.asarray``); other results go through
    ``jax.device_get``; ``post`` then maps the result once per evaluation.

    Example:
        >>> import numpy as np
        >>> from sparseopt_adapters._host import XCache
        >>> c = XCache(lambda x: (x.sum(), x * 2), lambda r: (float(r[0]), r[1]))
        >>> c(np.ones(3))[0], c(np.ones(3))[0], c.count
        (3.0, 3.0, 1)
    """

    def __init__(self, fn: Callable, post: Callable | None = None):
        self.fn = fn
        self.post = post
        self.count = 0
        self._buf: np.ndarray | None = None
        self.reset()

    def reset(self):
        """Forget the cached point (the next call evaluates)."""
        self._valid = False
        self._tag = None
        self._value = None

    def _same(self, x) -> bool:
        buf = self._buf
        if (_MEMCMP is not None and type(x) is np.ndarray and x.dtype == buf.dtype
                and x.shape == buf.shape and x.flags.c_contiguous):
            return _MEMCMP(x.ctypes.data, buf.ctypes.data, buf.nbytes) == 0
        return np.array_equal(x, buf)

    def __call__(self, x, tag=None):
        if self._valid:
            if tag is not None and tag == self._tag:
                return self._value
            if self._same(x):
                self._tag = tag
                return self._value
        x = np.asarray(x)
        buf = self._buf
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = self._buf = aligned_empty(x.size, x.dtype).reshape(x.shape)
        self._valid = False  # until fn succeeds: a raising fn leaves no stale hit behind
        np.copyto(buf, x)
        raw = self.fn(buf)
        value = np.asarray(raw) if isinstance(raw, jax.Array) else jax.device_get(raw)
        self._value = self.post(value) if self.post is not None else value
        self._valid = True
        self._tag = tag
        self.count += 1
        return self._value


# ---------------------------------------------------------------------------------------
# XLA compilations (counted and timed per setup)
# ---------------------------------------------------------------------------------------
_COMPILES = {"count": 0, "seconds": 0.0}


def _on_compile(name: str, secs: float, **_kw) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILES["count"] += 1
        _COMPILES["seconds"] += secs


monitoring.register_event_duration_secs_listener(_on_compile)


def compilations() -> tuple[int, float]:
    """``(count, seconds)`` of XLA backend compilations in this process so far."""
    return _COMPILES["count"], _COMPILES["seconds"]


# ---------------------------------------------------------------------------------------
# setup-cache keys
# ---------------------------------------------------------------------------------------
def _x0_key(x0) -> Hashable:
    """Parameters by shape/dtype; everything closed over by ``unravel`` (``Fixed`` nodes,
    integer and static leaves) by value: those values are baked into the compiled code."""
    from ._parametrization import Fixed

    leaves, treedef = jax.tree.flatten(x0, is_leaf=lambda t: isinstance(t, Fixed))
    parts = []
    for leaf in leaves:
        if isinstance(leaf, Fixed):
            sub = jax.tree.leaves(leaf.value)
            is_arr = [isinstance(a, np.ndarray | jax.Array | np.generic) for a in sub]
            arrays = [a for a, k in zip(sub, is_arr, strict=True) if k]
            others = tuple(_static_leaf(a) for a, k in zip(sub, is_arr, strict=True) if not k)
            parts.append(("fixed", jax.tree.structure(leaf.value), _digest(*arrays), others))
        else:
            parts.append(structure_key(leaf))
    return (treedef, tuple(parts))


def _static_leaf(leaf) -> Hashable:
    try:
        hash(leaf)
    except TypeError:
        return ("unhashable", object())  # never equal: always a miss
    return (type(leaf).__name__, leaf)


def static_key(static) -> Hashable:
    """Closed-over (static) argument leaves by value (Python floats included: a static
    float is a constant of the compiled code, unlike a traced ``jax.jit`` argument)."""
    leaves, treedef = jax.tree.flatten(static)
    return (treedef, tuple(_static_leaf(leaf) for leaf in leaves))


def value_key(tree) -> Hashable:
    """Every array leaf by value: for arguments that detection closes over."""
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [leaf for leaf in leaves if isinstance(leaf, np.ndarray | jax.Array | np.generic)]
    return (treedef, _digest(*arrays) if arrays else "",
            tuple(_static_leaf(leaf) for leaf in leaves
                  if not isinstance(leaf, np.ndarray | jax.Array | np.generic)))


def setup_key(variables: Variables, args, *, args_by_value: bool = False) -> Hashable:
    """What a setup built for ``(x0, args)`` depends on besides the function objects.

    Traced array arguments count by shape/dtype (integer arrays by value, as detection reads
    them), static ones by value; ``args_by_value=True`` keys every array by value (for
    adapters whose detection closes over the arguments' values).
    """
    dyn, static = split_args(args)
    dyn_key = value_key(dyn) if args_by_value else structure_key(dyn)
    return (variables.key, dyn_key, static_key(static))
