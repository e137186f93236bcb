"""Every "auto" decision of the Gauss–Newton solvers, in one place.

``sa.GaussNewton`` / ``sa.gauss_newton`` and every least-squares solver of the optimistix
adapter (``sa_optx.GaussNewton``, ``LevenbergMarquardt``, ``Dogleg``) take their route names,
their ``route="auto"`` choice and their fallback for a non-finite step from here, so the two
front ends cannot drift apart (a review found the copies disagreeing on what ``"cg"`` meant
and on the fallbacks, and one of them dropping a clause of the rule).

Route vocabulary (the linear solve of each Gauss–Newton / Levenberg–Marquardt step):

- ``"direct"``: ``J`` assembled on its colored sparsity pattern, then the minimum-norm
  least-squares step by a sparse factorisation (``sparseopt_adapters._direct``); correct on
  rank-deficient and underdetermined ``J``.
- ``"cg"``: conjugate gradients on the normal equations ``(JᵀJ + λD) δ = −Jᵀr``, matrix-free
  (one JVP and one VJP per iteration; ``lineax.Normal(lineax.CG)``). ``"normal_cg"`` is an
  alias kept for old code.
- ``"lsmr"``: ``lineax.LSMR`` on ``J`` (or ``[J; √λ D½]``), matrix-free; the condition
  number is not squared.
- ``"auto"``: :func:`choose_route`.

Example:
    >>> from sparseopt_adapters._policy import choose_route, check_route
    >>> check_route("normal_cg", "demo")
    'cg'
    >>> choose_route(m=100, n=50, n_colors=4, normal_nnz=300)
    'direct'
    >>> choose_route(m=10**4, n=10**3, n_colors=900, normal_nnz=10**6)
    'lsmr'
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "ROUTES",
    "RouteFallbackWarning",
    "check_route",
    "choose_route",
    "dense_by_probe",
    "dense_pattern",
    "fallback_route",
    "fallback_message",
]

ROUTES = ("auto", "direct", "cg", "lsmr")
_ALIASES = {"normal_cg": "cg"}

DENSE_FRACTION = 0.25  # a Jacobian (or sampled columns) denser than this is "dense"
DENSE_MIN_COLUMNS = 16  # ... when it has more columns than this
DENSE_PROBE_SIZE = 250_000  # below m·n of this, detection is cheap: probe does not decide
COMPRESSED_SMALL = 200_000  # n_colors · m at most this: assembling J is cheap anyway
NORMAL_SMALL_N = 2000  # a Gram matrix this small is factorised whatever its fill
NORMAL_FILL = 0.1  # else nnz(Gram) ≤ this · size² for the direct route


class RouteFallbackWarning(UserWarning):
    """A Gauss–Newton step came out non-finite on its route and was recomputed on another.

    The solve carried on. Silence it with
    ``warnings.simplefilter("ignore", sa._policy.RouteFallbackWarning)``.
    """


def check_route(route: str, who: str) -> str:
    """The canonical name of ``route`` (``"normal_cg"`` → ``"cg"``), or a ValueError."""
    route = _ALIASES.get(route, route)
    if route not in ROUTES:
        raise ValueError(
            f"{who}: route must be one of {ROUTES} (or 'normal_cg', an alias of 'cg'), got "
            f"{route!r}."
        )
    return route


def dense_by_probe(probe_density: float, m: int, n: int) -> bool:
    """Whether sampled Jacobian columns say "dense, go matrix-free without detection"."""
    return probe_density > DENSE_FRACTION and m * n > DENSE_PROBE_SIZE


def dense_pattern(nnz: int, m: int, n: int) -> bool:
    """Whether a detected pattern is too dense for coloring to pay (skip coloring it)."""
    return n > DENSE_MIN_COLUMNS and nnz > DENSE_FRACTION * m * n


def gram_nnz(pattern) -> int:
    """Nonzeros of the Gram matrix the direct route factorises: ``JᵀJ`` (``m ≥ n``) or
    ``JJᵀ`` (``m < n``), whichever is smaller."""
    A = pattern.to_scipy(format="csr")
    m, n = pattern.shape
    return int((A.T @ A).nnz if m >= n else (A @ A.T).nnz)


def choose_route(*, m: int, n: int, n_colors: int | None, normal_nnz: int | None) -> str:
    """The route ``"auto"`` takes, from the structure of ``J`` (``m × n``).

    ``"direct"`` when coloring pays — ``n_colors ≤ max(16, n/8)``, or the compressed Jacobian
    is small anyway (``n_colors · m ≤ 2·10⁵``) — and the Gram matrix stays sparse (its size
    ``min(m, n) ≤ 2000`` or ``nnz ≤ 0.1 · size²``); else ``"lsmr"``. Without a coloring
    (``n_colors=None``: a dense probe or a dense pattern) ``"lsmr"``.
    """
    if n_colors is None or normal_nnz is None:
        return "lsmr"
    colors_pay = n_colors <= max(16, n // 8) or n_colors * m <= COMPRESSED_SMALL
    k = min(m, n)
    gram_sparse = k <= NORMAL_SMALL_N or normal_nnz <= NORMAL_FILL * k * k
    return "direct" if colors_pay and gram_sparse else "lsmr"


def fallback_route(route: str) -> str | None:
    """Where a non-finite step on ``route`` is recomputed: the matrix-free LSMR for the
    assembled and CG routes; ``None`` after LSMR (then a damped step is the last resort)."""
    return {"direct": "lsmr", "cg": "lsmr", "custom": "lsmr"}.get(route)


def fallback_message(route: str, new: str | None, where: str) -> str:
    """The sentence a result message, verbose output and the warning carry."""
    target = f"the {new!r} route" if new else "a damped step"
    return f"the {route!r} step was not finite {where}; recomputed it on {target}"


def warn_fallback(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, RouteFallbackWarning, stacklevel=stacklevel)


def finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x))))
