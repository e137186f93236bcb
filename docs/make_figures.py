"""Make the pictures and generated snippets of the documentation.

    python docs/make_figures.py

Writes ``docs/img/*.png`` (patterns and colorings drawn with ``SparsityPattern.spy`` and
``ColoringResult.spy``) and ``docs/snippets/conservative_cases.md`` (the detection corpus cases
whose pattern is a sound superset, with the reason each gives). Commit what it writes.
"""

from __future__ import annotations

import os
import pathlib
import sys
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parent
IMG = DOCS / "img"
DPI = 80


def save(fig, name):
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=DPI)
    plt.close(fig)
    print(f"wrote docs/img/{name}")


def bratu(N):
    def r(u):
        U = jnp.pad(u.reshape(N, N), 1)
        lap = U[2:, 1:-1] + U[:-2, 1:-1] + U[1:-1, 2:] + U[1:-1, :-2] - 4 * U[1:-1, 1:-1]
        return (lap + jnp.exp(U[1:-1, 1:-1])).reshape(-1)

    return r


def compressed_picture(ax, coloring):
    """The compressed Jacobian ``J S`` of a forward coloring: entry (i, j) lands in column
    ``color(j)`` of row ``i``, drawn in the color of its column's group."""
    p, colors = coloring.pattern, coloring.column_colors
    k = coloring.n_colors
    ax.scatter(colors[p.cols], p.rows, c=colors[p.cols], cmap="tab20", marker="s",
               s=(min(8.0, 300.0 / p.shape[0])) ** 2)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(p.shape[0] - 0.5, -0.5)
    ax.set_xticks(range(k))
    ax.set_title(f"compressed J·S: {p.shape[0]}×{k}", fontsize=8)


def fig_jacobian_coloring():
    N = 6
    r = bratu(N)
    p = sa.jacobian_sparsity(r, jnp.zeros(N * N))
    c = sa.color_jacobian(p, mode="forward")
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.2),
                             gridspec_kw={"width_ratios": [1, 1, 0.35]})
    p.spy(ax=axes[0])
    c.spy(ax=axes[1])
    axes[1].set_title(f"forward coloring: {c.n_colors} colors", fontsize=8)
    compressed_picture(axes[2], c)
    save(fig, "bratu_coloring.png")


def fig_arrowhead():
    n = 24
    dense = np.eye(n, dtype=bool) | np.eye(n, k=1, dtype=bool)
    dense[0, :] = dense[:, 0] = True
    p = sa.SparsityPattern.from_dense(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        fwd = sa.color_jacobian(p, mode="forward")
    bi = sa.color_jacobian(p, mode="bidirectional")
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    fwd.spy(ax=axes[0])
    axes[0].set_title(f"forward only: {fwd.n_colors} JVPs", fontsize=8)
    bi.spy(ax=axes[1])
    axes[1].set_title(f"bidirectional: {bi.n_forward} JVPs + {bi.n_reverse} VJPs", fontsize=8)
    save(fig, "arrowhead_bicoloring.png")


def fig_hessian_star_acyclic():
    N = 6

    def energy(u):  # 2-D Laplacian energy plus a quartic: 5-point Hessian
        U = jnp.pad(u.reshape(N, N), 1)
        gx, gy = U[1:, 1:-1] - U[:-1, 1:-1], U[1:-1, 1:] - U[1:-1, :-1]
        return 0.5 * jnp.sum(gx**2) + 0.5 * jnp.sum(gy**2) + jnp.sum(u**4)

    p = sa.hessian_sparsity(energy, jnp.zeros(N * N))
    star = sa.color_hessian(p, method="star")
    acyc = sa.color_hessian(p, method="acyclic")
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.0))
    p.spy(ax=axes[0])
    star.spy(ax=axes[1])
    axes[1].set_title(f"star: {star.n_colors} HVPs (direct)", fontsize=8)
    acyc.spy(ax=axes[2])
    axes[2].set_title(f"acyclic: {acyc.n_colors} HVPs (substitution)", fontsize=8)
    save(fig, "hessian_star_acyclic.png")


def fig_seed_pattern():
    """∂r/∂g of the seed problem: sparse with selection Y, B; dense with dense Y, B."""
    rng = np.random.default_rng(0)
    p_, q = 16, 6
    rows = np.repeat(np.arange(p_), 2)
    a = (np.arange(p_) * (q - 1)) // p_  # fine node i talks to coarse a(i) and a(i) + 1
    cols = np.stack([a, a + 1], 1).ravel()
    G = sa.PatternMatrix(rng.standard_normal(rows.size), rows, cols, (p_, q))
    L = jnp.asarray(np.diag(2 * np.ones(p_)) - np.diag(np.ones(p_ - 1), 1)
                    - np.diag(np.ones(p_ - 1), -1))
    Ysel = jnp.eye(q)[:4]
    Bsel = jnp.eye(q)[:, 2:]
    Yd, Bd = jnp.asarray(rng.standard_normal((4, q))), jnp.asarray(rng.standard_normal((q, 4)))

    def residual(Y, B):
        return lambda g: (Y @ (G.T @ (L @ (sa.PatternMatrix(g, G.rows, G.cols, G.shape) @ B)))
                          ).ravel()

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
    for ax, (Y, B, what) in zip(axes, ((Ysel, Bsel, "selection Y, B"),
                                       (Yd, Bd, "dense Y, B")), strict=True):
        pat = sa.jacobian_sparsity(residual(Y, B), G.values)
        pat.spy(ax=ax)
        ax.set_title(f"∂r/∂g, {what}: nnz={pat.nnz}", fontsize=8)
    save(fig, "seed_jacobian.png")


def conservative_cases():
    sys.path.insert(0, str(DOCS.parent / "tests"))
    import corpus

    lines = ["| kind | case | why the pattern is a superset |", "|---|---|---|"]
    for kind, cases in (("Jacobian", corpus.JACOBIAN_CASES), ("Hessian", corpus.HESSIAN_CASES)):
        for c in cases:
            if not c.exact:
                lines.append(f"| {kind} | `{c.name}` | {c.why} |")
    out = DOCS / "snippets" / "conservative_cases.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("<!-- generated by docs/make_figures.py from tests/corpus.py -->\n"
                   + "\n".join(lines) + "\n")
    print(f"wrote docs/snippets/{out.name} ({len(lines) - 2} cases)")


def main():
    IMG.mkdir(exist_ok=True)
    # spy() passes cmap even without colors; matplotlib warns about that, harmlessly
    warnings.filterwarnings("ignore", message="No data for colormapping")
    fig_jacobian_coloring()
    fig_arrowhead()
    fig_hessian_star_acyclic()
    fig_seed_pattern()
    conservative_cases()


if __name__ == "__main__":
    main()
