"""Sparse direct least-squares solves on the host: the minimum-norm step, robust to rank.

The Gauss–Newton step is the least-squares solution of ``J δ = −r``. When ``J`` has full
column rank that is the normal-equations solution; when it does not (fewer residuals than
parameters, identically-zero residual rows, unused parameters) ``JᵀJ`` is singular and a plain
factorisation returns NaN. :func:`lstsq` returns the *minimum-norm* least-squares solution in
every case, by iterated Tikhonov regularisation (a form of iterative refinement):

    x₀ = 0,   x_{k+1} = x_k + (AᵀA + δI)⁻¹ Aᵀ (b − A x_k),

with ``δ = 10⁻¹⁰ · max_j ‖A e_j‖²`` and one sparse factorisation of ``AᵀA + δI`` (or of
``AAᵀ + δI`` when ``A`` is wide, using ``(AᵀA + δI)⁻¹Aᵀ = Aᵀ(AAᵀ + δI)⁻¹``). Every iterate stays
in the range of ``Aᵀ`` (so no null-space component appears), and a singular direction ``σ``
converges by a factor ``δ/(σ² + δ)`` per step: a few steps reach the minimum-norm solution to
rounding for every ``σ² ≫ δ``. The same loop is ordinary iterative refinement for a
well-posed ``A`` (it removes the ``δ`` bias and the rounding of the factorisation).

Square systems are first tried by LU (SuperLU, COLAMD) — or a symmetric-mode LU when tagged
symmetric — and fall back to the regularised solve when the factor is singular or the
solution does not satisfy the system.

Backends for the Gram factorisation (``backend=``), chosen by measurement
(``benchmarks/bench_direct_solvers.py``): ``"superlu"`` (scipy's SuperLU in symmetric mode,
minimum degree on ``Aᵀ+A``, diagonal pivots), ``"qdldl"`` (the ``qdldl`` wheel: LDLᵀ with
AMD), ``"qdldl_augmented"`` (qdldl on the quasi-definite ``[[I, A], [Aᵀ, −δI]]``, which
avoids forming ``AᵀA``), and ``"plain"`` (the old unregularised normal equations, kept for
comparison only). ``"auto"`` is ``"superlu"``: equal to qdldl within noise on the main example,
no extra import, and present wherever scipy is.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparseopt_adapters._direct import lstsq
    >>> A = sp.csr_array(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))  # rank 1, wide
    >>> lstsq(A, np.array([2.0, 5.0])).round(12)  # minimum norm: (1, 1, 0)
    array([1., 1., 0.])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._coloring import ColoringResult, color_jacobian, coloring_from_colors
from ._pattern import SparsityPattern

__all__ = ["BACKENDS", "damped_coloring", "lstsq", "stack_identity"]

BACKENDS = ("auto", "superlu", "qdldl", "qdldl_augmented", "plain")
_DELTA = 1e-10  # regularisation relative to the largest squared column norm
_MAX_REFINE = 8
_REFINE_TOL = 1e-14
_SQUARE_RESIDUAL = 1e-10  # a square LU solution must satisfy the system to this (relative)


# ---------------------------------------------------------------------------------------
# the damped operator [J; √λ D½]
# ---------------------------------------------------------------------------------------


def stack_identity(pattern: SparsityPattern) -> SparsityPattern:
    """Pattern of ``[J; I]``: the rows of the ``n × n`` identity appended below ``J``."""
    m, n = pattern.shape
    i = np.arange(n)
    return SparsityPattern(
        np.concatenate([pattern.rows, m + i]), np.concatenate([pattern.cols, i]), (m + n, n)
    )


def damped_coloring(coloring: ColoringResult) -> ColoringResult:
    """A coloring of ``[J; I]`` (the operator of a damped step) from one of ``J``.

    Forward colors stay valid (each identity row touches one column), except that columns of
    ``J`` that are empty (color ``-1``: a parameter the residual does not use) now hold one
    identity entry each, in distinct rows: one extra color serves them all. Other modes are
    recolored. The one function used by ``sa.GaussNewton`` and the optimistix adapter.

    Example:
        >>> import numpy as np, sparseopt_adapters as sa
        >>> from sparseopt_adapters._direct import damped_coloring
        >>> p = sa.SparsityPattern(np.array([0, 1]), np.array([0, 1]), (2, 3))  # column 2 empty
        >>> damped_coloring(sa.color_jacobian(p, mode="forward")).pattern.shape
        (5, 3)
    """
    aug = stack_identity(coloring.pattern)
    if coloring.mode == "forward":
        colors = np.array(coloring.column_colors)
        colors[colors < 0] = coloring.n_forward
        return coloring_from_colors(aug, "forward", colors)
    return color_jacobian(aug, mode="auto", warn=False)


# ---------------------------------------------------------------------------------------
# factorisations
# ---------------------------------------------------------------------------------------


def _superlu_spd(N):
    lu = spla.splu(
        N.tocsc(),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    return lu.solve


def _qdldl(N):
    import qdldl

    return qdldl.Solver(sp.csc_matrix(N)).solve


def _gram_solver(A: sp.csr_array, delta: float, backend: str):
    """``r ↦ (AᵀA + δI)⁻¹ Aᵀ r`` through one factorisation."""
    m, n = A.shape
    if backend == "qdldl_augmented":
        import qdldl

        K = sp.block_array(
            [[sp.eye_array(m), A], [A.T, -delta * sp.eye_array(n)]], format="csc"
        )
        solve = qdldl.Solver(sp.csc_matrix(K)).solve
        zeros = np.zeros(n)
        return lambda r: solve(np.concatenate([r, zeros]))[m:]
    factor = _qdldl if backend == "qdldl" else _superlu_spd
    At = A.T.tocsr()
    if m >= n:
        solve = factor((At @ A + delta * sp.eye_array(n)).tocsc())
        return lambda r: solve(At @ r)
    solve = factor((A @ At + delta * sp.eye_array(m)).tocsc())
    return lambda r: At @ solve(r)


def _plain(A: sp.csr_array, b: np.ndarray) -> np.ndarray:
    """The unregularised normal equations (the pre-issue-13 solver), for comparison."""
    m, n = A.shape
    At = A.T.tocsr()
    try:
        if m >= n:
            return _superlu_spd(At @ A)(At @ b)
        return At @ _superlu_spd(A @ At)(b)
    except RuntimeError:
        return np.full(n, np.nan)


def _square(A: sp.csr_array, b: np.ndarray, symmetric: bool) -> np.ndarray | None:
    """LU solve of a square system, or ``None`` when it is singular or inaccurate."""
    try:
        if symmetric:
            x = _superlu_spd(A)(b)
        else:
            x = spla.splu(A.tocsc(), permc_spec="COLAMD").solve(b)
    except RuntimeError:  # "Factor is exactly singular"
        return None
    if not np.all(np.isfinite(x)):
        return None
    scale = np.linalg.norm(b) + abs(A).sum(axis=1).max() * np.linalg.norm(x)
    if np.linalg.norm(A @ x - b) > _SQUARE_RESIDUAL * max(scale, 1e-300):
        return None
    return x


def lstsq(
    A: sp.csr_array,
    b: np.ndarray,
    *,
    symmetric: bool = False,
    backend: str = "auto",
    stats: dict | None = None,
) -> np.ndarray:
    """The minimum-norm least-squares solution of ``A x = b`` for any sparse ``A``.

    See the module docstring for the method. Non-finite ``A`` or ``b`` give NaN (the caller
    reports or falls back).

    Args:
        A: ``m × n`` sparse matrix.
        b: Right-hand side, length ``m``.
        symmetric: ``A`` is square and symmetric (try a symmetric-mode LU first).
        backend: One of :data:`BACKENDS`.
        stats: A dict to receive ``refinements`` and ``path`` (``"lu"`` / ``"regularised"``).

    Returns:
        ``x``, length ``n``, float64.
    """
    if backend not in BACKENDS:
        raise ValueError(f"lstsq: backend must be one of {BACKENDS}, got {backend!r}.")
    A = sp.csr_array(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = A.shape
    stats = {} if stats is None else stats
    if not (np.all(np.isfinite(A.data)) and np.all(np.isfinite(b))):
        stats.update(path="non-finite input", refinements=0)
        return np.full(n, np.nan)
    if backend == "plain":
        stats.update(path="plain", refinements=0)
        if m == n:
            x = _square(A, b, symmetric)
            return np.full(n, np.nan) if x is None else x
        return _plain(A, b)
    if m == n and n:
        x = _square(A, b, symmetric)
        if x is not None:
            stats.update(path="lu", refinements=0)
            return x
    col_sq = np.asarray(A.multiply(A).sum(axis=0)).ravel() if A.nnz else np.zeros(n)
    scale = float(col_sq.max()) if n else 0.0
    if scale == 0.0 or not np.any(b):
        stats.update(path="zero", refinements=0)
        return np.zeros(n)
    delta = _DELTA * scale
    try:
        correction = _gram_solver(A, delta, "superlu" if backend == "auto" else backend)
    except RuntimeError:  # a factor exactly singular in spite of δ (underflow)
        stats.update(path="singular", refinements=0)
        return np.full(n, np.nan)
    x = np.zeros(n)
    r = b.copy()
    n_refine = 0
    for n_refine in range(1, _MAX_REFINE + 1):  # noqa: B007
        dx = correction(r)
        x = x + dx
        r = b - A @ x
        if not np.all(np.isfinite(x)):
            break
        if np.linalg.norm(dx) <= _REFINE_TOL * np.linalg.norm(x):
            break
    stats.update(path="regularised", refinements=n_refine)
    return x
