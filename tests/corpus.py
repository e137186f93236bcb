"""Registry of test functions spanning every primitive family detection must handle.

Each case: ``name``, ``f``, ``args`` (example arguments), ``argnums`` and ``exact`` — whether
the detected pattern must *equal* the union of dense-AD nonzeros at random points (``False``
where the rule is conservative by design; each such case says why). Shapes are asymmetric.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import sparse

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(42)


@dataclass
class Case:
    name: str
    f: object
    args: tuple
    argnums: object = 0
    exact: bool = True
    why: str = ""
    tags: set = field(default_factory=set)
    # Random points whose dense-AD nonzeros are united into the truth: more for cases whose
    # pattern is a union over data-dependent choices (max, argmax, branches, pivots).
    points: int = 4


JACOBIAN_CASES: list[Case] = []
HESSIAN_CASES: list[Case] = []


def jac(name, args, argnums=0, exact=True, why="", tags=(), points=4):
    def deco(f):
        JACOBIAN_CASES.append(Case(name, f, args, argnums, exact, why, set(tags), points))
        return f

    return deco


def hess(name, args, argnums=0, exact=True, why="", points=4):
    def deco(f):
        HESSIAN_CASES.append(Case(name, f, args, argnums, exact, why, set(), points))
        return f

    return deco


x5 = (jnp.asarray(rng.normal(size=5)),)
x7 = (jnp.asarray(rng.normal(size=7)),)
x12 = (jnp.asarray(rng.normal(size=12)),)
m34 = (jnp.asarray(rng.normal(size=(3, 4))),)

# -- elementwise ----------------------------------------------------------------------------
jac("sin", x5)(lambda x: jnp.sin(x))
jac("exp_cos_mix", x5)(lambda x: jnp.exp(x) * jnp.cos(x[::-1]))
jac("integer_pow", x5)(lambda x: x**3 + x[0] ** 2)
jac("pow", x5)(lambda x: jnp.abs(x) ** x[::-1])
jac("where_known_pred", x7)(lambda x: jnp.where(jnp.arange(7) % 2 == 0, x, x[::-1] ** 2))
jac("where_data_pred", x7, points=24)(
    lambda x: jnp.where(x > 0, x, jnp.roll(x, 1))
)
jac("clip_max_min", x7, points=24)(
    lambda x: jnp.clip(x, -0.5, 0.5) + jnp.maximum(x, x[::-1])
)
jac("atan2_logistic", x5)(lambda x: jnp.arctan2(x, x[::-1] + 3) + jax.nn.sigmoid(x))
jac("tanh_sqrt_log", x5)(lambda x: jnp.tanh(x) + jnp.sqrt(x**2 + 1) + jnp.log1p(x**2))
jac("division", x5)(lambda x: x / (2.0 + x[::-1] ** 2))
jac("const_zero_mask", x7)(lambda x: x * jnp.array([1.0, 0, 2, 0, 0, 3, 0]))
jac("zero_times_dependent", x7)(lambda x: (x[1:] * 0.0) + x[:-1])
jac("comparison_sign_floor", x5)(
    lambda x: (jnp.floor(x) + 5.0) * x + jnp.sign(x[::-1]) + (x > 0).astype(x.dtype)
)
jac("stop_gradient", x5)(lambda x: lax.stop_gradient(x) * x[::-1] + lax.stop_gradient(x))
jac("convert_element_type", x5)(lambda x: x.astype(jnp.float32).astype(jnp.float64) * 2)

# -- data movement --------------------------------------------------------------------------
jac("reshape_transpose", (jnp.asarray(rng.normal(size=12)),))(
    lambda x: x.reshape(3, 4).T.reshape(-1) * x
)
jac("broadcast", x5)(lambda x: (x[:, None] * jnp.ones((5, 3))).reshape(-1))
jac("strided_slice", x12)(lambda x: x[1:10:3] * x[::4])
jac("dynamic_slice_const", x12)(lambda x: lax.dynamic_slice(x, (3,), (4,)) ** 2)
jac("dynamic_update_slice", x12)(
    lambda x: lax.dynamic_update_slice(x, x[:3] ** 2, (5,))
)
jac("concatenate", x5)(lambda x: jnp.concatenate([x[:2] * 2, x, jnp.zeros(3), x[3:] ** 2]))
jac("pad", x5)(lambda x: lax.pad(x, 0.0, [(2, 1, 1)]) + 1.0)
jac("pad_negative", x7)(lambda x: lax.pad(x, 1.0, [(-2, 1, 0)]))
jac("rev_flip", m34)(lambda x: jnp.flip(x, axis=1) * x)
jac("gather_fancy", x7)(lambda x: x[jnp.array([0, 3, 3, 6, 1])] * 2)
jac("gather_2d", (jnp.asarray(rng.normal(size=(4, 5))),))(
    lambda x: x[jnp.array([0, 2, 3]), jnp.array([1, 1, 4])]
)
jac("scatter_set", x5)(lambda x: jnp.zeros(8).at[jnp.array([1, 4, 6])].set(x[:3]) + 0.0)
jac("scatter_set_overwrites", x5)(lambda x: x.at[jnp.array([0, 2])].set(x[3:] ** 2))
jac("scatter_add_duplicates", x5)(
    lambda x: jnp.zeros(4).at[jnp.array([0, 0, 2, 3, 3])].add(x)
)
jac("scatter_mul", x5)(
    lambda x: x.at[jnp.array([1, 3])].multiply(x[:2], unique_indices=True)
)
jac("iota_mask", x7)(lambda x: x * (jnp.arange(7) >= 3))
jac("roll", x7)(lambda x: jnp.roll(x, 2) - x)
jac("tril_mask", m34)(lambda x: jnp.tril(x) @ jnp.ones(4))
jac("integer_index_argument", (jnp.asarray(rng.normal(size=6)), np.array([5, 0, 2])))(
    lambda x, idx: x[idx] * x[0]
)
jac("split", x7)(lambda x: jnp.split(x, [2, 5])[1] * 2)

# -- reductions -----------------------------------------------------------------------------
jac("sum_axis", m34)(lambda x: jnp.sum(x**2, axis=0))
jac("max_axis", m34, points=24)(
    lambda x: jnp.max(x, axis=1)
)
jac("prod", m34)(lambda x: jnp.prod(x, axis=1))
jac("prod_with_known_zero", x5)(lambda x: jnp.prod(x * jnp.array([1.0, 0, 1, 1, 1])))
jac("argmax_select", x7, points=24)(
    lambda x: x[jnp.argmax(x)] * jnp.ones(2)
)
jac("cumsum", x7)(lambda x: jnp.cumsum(x))
jac("cumsum_reverse", m34)(lambda x: lax.cumsum(x, axis=1, reverse=True))
jac("cumprod", x5)(lambda x: jnp.cumprod(x))
jac("cummax", x5, points=24)(
    lambda x: lax.cummax(x)
)
jac("reduce_window_sum", (jnp.asarray(rng.normal(size=(5, 6))),))(
    lambda x: lax.reduce_window(x, 0.0, lax.add, (2, 3), (1, 2), "VALID").reshape(-1)
)
jac("reduce_window_max_pool", (jnp.asarray(rng.normal(size=(4, 6))),), points=24)(
    lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (2, 2), "SAME").reshape(-1)
)
jac("logsumexp", m34)(lambda x: jax.nn.logsumexp(x, axis=1))
jac("softmax", m34)(lambda x: jax.nn.softmax(x, axis=0).reshape(-1))
jac("mean_var", m34)(lambda x: jnp.var(x, axis=1) + jnp.mean(x, axis=1))

# -- products and convolutions --------------------------------------------------------------
_A = np.array([[1.0, 0, 0, 2, 0], [0, 0, 3, 0, 0], [0, 0, 0, 0, 0], [4, 0, 0, 0, 5]])
jac("sparse_const_matvec", x5)(lambda x: _A @ x)
jac("sparse_const_chain", x5)(lambda x: _A.T @ (_A @ jnp.sin(x)))
jac("batched_matmul", (jnp.asarray(rng.normal(size=(2, 3, 4))),))(
    lambda x: jnp.einsum("bij,bkj->bik", x, x).reshape(-1)
)
jac("outer_product", x5)(lambda x: jnp.outer(x[:2], x[3:]).reshape(-1))
jac("tensordot", (jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(4, 2)))),
    argnums=(0, 1))(lambda a, b: jnp.tensordot(a, b, axes=1).reshape(-1))
jac("matmul_known_zero_block", (jnp.asarray(rng.normal(size=(4, 4))),))(
    lambda x: (jnp.zeros((4, 4)).at[:2, :2].set(x[:2, :2]) @ x).reshape(-1)
)
jac("convolve_1d", x12)(lambda x: jnp.convolve(x, jnp.array([1.0, -2.0, 1.0]), mode="valid"))
jac("conv_2d", (jnp.asarray(rng.normal(size=(1, 1, 5, 6))),))(
    lambda x: lax.conv(x, jnp.ones((2, 1, 3, 3)), (1, 1), "SAME").reshape(-1)
)
jac("conv_2d_kernel_param", (jnp.asarray(rng.normal(size=(2, 1, 2, 2))),), points=24)(
    lambda k: lax.conv(jnp.asarray(np.arange(30.0).reshape(1, 1, 5, 6)), k, (1, 1), "VALID")
    .reshape(-1)
)

# -- control flow ---------------------------------------------------------------------------
jac("nested_jit", x7)(jax.jit(lambda x: jax.jit(lambda y: y[1:] * y[:-1])(x) + 1))
jac("cond_known", x5)(lambda x: lax.cond(True, lambda y: y * 2, lambda y: y[::-1], x))
jac("cond_data", x5, points=24)(
    lambda x: lax.cond(x[0] > 0, lambda y: y * 2, lambda y: y[::-1], x)
)
jac("switch_known", x5)(
    lambda x: lax.switch(1, [lambda y: y, lambda y: jnp.roll(y, 1) * y, lambda y: -y], x)
)
jac("fori_loop_unrolled", x7)(
    lambda x: lax.fori_loop(0, 3, lambda i, y: y.at[i].set(y[i + 1] * y[i]), x)
)
jac("scan_cumulative", x5)(lambda x: lax.scan(lambda c, xi: (c * 0.5 + xi, c), 0.0, x)[1])
jac("scan_carry_vector", x7)(
    lambda x: lax.scan(lambda c, _: (c.at[1:].add(c[:-1] * 0.1), None), x, None, length=2)[0]
)
jac("while_fixed_point", x5, points=24)(
    lambda x: lax.while_loop(lambda c: c[0] < 10.0, lambda c: c.at[1:].add(c[:-1] ** 2) + 1,
                             x)
)
jac("while_known_trip", x5)(
    lambda x: lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * jnp.roll(c[1], 1)), (0, x)
    )[1]
)


@jax.custom_jvp
def _ste_round(x):
    return jnp.round(x)


_ste_round.defjvp(lambda p, t: (_ste_round(p[0]), t[0]))


@jax.custom_vjp
def _clip_grad(x):
    return jnp.round(x)


_clip_grad.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g * 1.0,))

jac("custom_jvp_straight_through", x5)(lambda x: _ste_round(x) * 2 + _ste_round(x[::-1]))
jac("custom_jvp_softplus", x5)(lambda x: jax.nn.softplus(x) + jax.nn.relu(x[::-1]))
jac("custom_vjp_straight_through", x5)(lambda x: _clip_grad(x) + 0.0)

# -- linear algebra (conservative by design: dense per matrix) ------------------------------
_M = np.eye(4) * 3 + np.ones((4, 4)) * 0.1
jac("linalg_solve_rhs", (jnp.asarray(rng.normal(size=4)),))(lambda b: jnp.linalg.solve(_M, b))
jac("linalg_solve_matrix", (jnp.asarray(rng.normal(size=4)),))(
    lambda x: jnp.linalg.solve(_M + jnp.diag(x), jnp.ones(4))
)
jac("triangular_solve_columns", (jnp.asarray(rng.normal(size=(3, 2))),), points=24)(
    lambda b: lax.linalg.triangular_solve(jnp.asarray(np.tril(_M[:3, :3])), b, left_side=True,
                                          lower=True).reshape(-1)
)
jac("cholesky", (jnp.asarray(rng.normal(size=3)),), points=24)(
    lambda x: jnp.linalg.cholesky(_M[:3, :3] + jnp.diag(x**2)).reshape(-1)
)
jac("qr", m34, points=24)(lambda x: jnp.linalg.qr(x)[1].reshape(-1))
jac("eigh", (jnp.asarray(rng.normal(size=3)),))(
    lambda x: jnp.linalg.eigh(_M[:3, :3] + jnp.diag(x))[0]
)
jac("svd_values", m34)(lambda x: jnp.linalg.svd(x, compute_uv=False))
jac("batched_inverse", (jnp.asarray(rng.normal(size=(2, 3))),), points=24)(
    lambda x: jnp.linalg.inv(jax.vmap(jnp.diag)(x) + 3.0).reshape(-1)
)
jac("sort", x5, points=64)(lambda x: jnp.sort(x))
jac("sort_known_keys", x5)(
    lambda x: lax.sort((jnp.array([3, 1, 4, 0, 2]), x), num_keys=1)[1] * 2
)
jac("fft", x7, points=24)(
    lambda x: jnp.abs(jnp.fft.rfft(x))
)

# -- sparse matrices (jax.experimental.sparse) and the seed problem -------------------------
_S = sparse.BCOO.fromdense(_A)
jac("bcoo_matvec_const", x5)(lambda x: _S @ x)
jac("bcoo_data_is_parameter", (jnp.asarray(rng.normal(size=_S.nse)),))(
    lambda d: sparse.BCOO((d, _S.indices), shape=_S.shape) @ jnp.arange(1.0, 6.0)
)
jac("bcoo_todense_param", (jnp.asarray(rng.normal(size=_S.nse)),))(
    lambda d: sparse.BCOO((d, _S.indices), shape=_S.shape).todense().reshape(-1)
)
jac("bcoo_transpose_param", (jnp.asarray(rng.normal(size=_S.nse)),))(
    lambda d: (sparse.BCOO((d, _S.indices), shape=_S.shape).T @ jnp.arange(4.0))
)
jac("bcoo_sparse_sparse_product", (jnp.asarray(rng.normal(size=_S.nse)),))(
    lambda d: (
        sparse.BCOO((d, _S.indices), shape=_S.shape)
        @ sparse.BCOO((d, _S.indices), shape=_S.shape).T
    ).todense().reshape(-1)
)
jac("gather_segment_sum_matvec", x5)(
    lambda x: jax.ops.segment_sum(
        jnp.array([1.0, 2, 3, 4, 5]) * x[np.array([0, 3, 2, 0, 4])],
        np.array([0, 0, 1, 3, 3]), num_segments=4, indices_are_sorted=True,
    )
)
jac("bcoo_argument_data_unknown",
    (jnp.asarray(rng.normal(size=5)), sparse.BCOO.fromdense(_A)), argnums=0)(
    lambda x, S: S @ x
)


def _seed_problem(p, q, ny, nb, nnz_g, selection):
    r = np.random.default_rng(p * 1000 + q)
    gi = r.integers(0, p, size=3 * nnz_g)
    gj = r.integers(0, q, size=3 * nnz_g)
    key = np.unique(gi * q + gj)[:nnz_g]
    gi, gj = key // q, key % q
    L = np.zeros((p, p))
    L[np.arange(p), np.arange(p)] = 2.0
    L[np.arange(p - 1), np.arange(1, p)] = -1.0
    L[np.arange(1, p), np.arange(p - 1)] = -0.5  # non-symmetric
    if selection:
        Y = np.zeros((ny, q))
        Y[np.arange(ny), r.choice(q, ny, replace=False)] = 1.0
        B = np.zeros((q, nb))
        B[r.choice(q, nb, replace=False), np.arange(nb)] = 1.0
    else:
        Y = r.normal(size=(ny, q))
        B = r.normal(size=(q, nb))
    X = r.normal(size=(ny, nb))
    g0 = r.normal(size=gi.size)
    return gi, gj, L, Y, B, X, g0


for _sel in (True, False):
    _gi, _gj, _L, _Y, _B, _X, _g0 = _seed_problem(6, 4, 3, 2, 9, _sel)
    _Ls = sparse.BCOO.fromdense(_L)
    tag = "selection" if _sel else "dense"

    def _scatter_G(g, gi=_gi, gj=_gj):
        return jnp.zeros((6, 4)).at[gi, gj].set(g)

    jac(f"seed_scatter_{tag}", (jnp.asarray(_g0),))(
        lambda g, Y=_Y, B=_B, X=_X, L=_L, mk=_scatter_G: (
            X - Y @ mk(g).T @ L @ mk(g) @ B
        ).reshape(-1)
    )

    def _bcoo_G(g, gi=_gi, gj=_gj):
        return sparse.BCOO((g, np.stack([gi, gj], 1)), shape=(6, 4))

    jac(f"seed_bcoo_{tag}", (jnp.asarray(_g0),))(
        lambda g, Y=_Y, B=_B, X=_X, Ls=_Ls, mk=_bcoo_G: (
            X - Y @ (mk(g).T @ (Ls @ (mk(g) @ B)))
        ).reshape(-1)
    )

    def _segsum_GB(g, M, gi=_gi, gj=_gj):  # (G @ M) by gather + segment_sum
        order = np.argsort(gi, kind="stable")
        return jax.ops.segment_sum(
            g[order][:, None] * M[gj[order]], gi[order], num_segments=6, indices_are_sorted=True
        )

    def _segsum_GtM(g, M, gi=_gi, gj=_gj):  # (Gᵀ @ M)
        return jax.ops.segment_sum(g[:, None] * M[gi], gj, num_segments=4)

    jac(f"seed_segment_sum_{tag}", (jnp.asarray(_g0),))(
        lambda g, Y=_Y, B=_B, X=_X, L=_L, a=_segsum_GB, b=_segsum_GtM: (
            X - Y @ b(g, L @ a(g, B))
        ).reshape(-1)
    )

# -- pytrees, several arguments, ShapeDtypeStruct -------------------------------------------
jac("pytree_in_out", ({"a": jnp.ones(3), "b": jnp.ones((2, 2))},))(
    lambda d: (d["a"] * d["b"][0, 0], jnp.sum(d["b"], axis=0) * d["a"][:2])
)
jac("two_argnums", (jnp.ones(3), jnp.ones(4)), argnums=(0, 1))(
    lambda a, b: jnp.concatenate([a * b[:3], b[3:] * a[0]])
)
jac("second_argnum", (jnp.ones(3), jnp.asarray(rng.normal(size=4))), argnums=1)(
    lambda a, b: a[:, None] * b[None, :]
)
jac("bratu_2d", (jnp.asarray(rng.normal(size=(5, 6))),))(
    lambda u: (
        -4 * u
        + jnp.pad(u, ((1, 0), (0, 0)))[:-1] + jnp.pad(u, ((0, 1), (0, 0)))[1:]
        + jnp.pad(u, ((0, 0), (1, 0)))[:, :-1] + jnp.pad(u, ((0, 0), (0, 1)))[:, 1:]
        + 0.1 * jnp.exp(u)
    ).reshape(-1)
)
jac("rosenbrock_residual", x7)(
    lambda x: jnp.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])
)

# -- Hessians -------------------------------------------------------------------------------
hess("rosenbrock", x7)(lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))
hess("linear_terms_vanish", x7)(lambda x: jnp.sum(x) + x[0] * x[3] + 3.0 * x[5])
hess("pairwise_products", x7)(lambda x: x[0] * x[6] + x[2] * x[4] + jnp.sin(x[1]))
hess("arrowhead", x7)(lambda x: jnp.sum(x**4) + x[-1] * jnp.sum(x[:-1]))
hess("quadratic_sparse_const", x5)(lambda x: x @ (_A.T @ _A) @ x)
hess("exp_of_sum_dense", x5)(lambda x: jnp.exp(jnp.sum(x)))
hess("log_barrier", x5)(lambda x: -jnp.sum(jnp.log(x**2 + 1.0)))
hess("banded_quartic", x12)(
    lambda x: jnp.sum((x[4:] - x[:-4]) ** 2 * x[2:-2] ** 2) + jnp.sum(jnp.cos(x))
)
hess("cond_data", x5, points=24)(
    lambda x: lax.cond(x[0] > 0, lambda y: jnp.sum(y[:2] ** 2), lambda y: y[3] * y[4], x)
)
_SEED_SEL = _seed_problem(6, 4, 3, 2, 9, True)
hess("seed_energy_selection", (jnp.asarray(_SEED_SEL[-1]),))(
    lambda g, s=_SEED_SEL: jnp.sum(
        (s[5] - s[3] @ jnp.zeros((6, 4)).at[s[0], s[1]].set(g).T @ s[2]
         @ jnp.zeros((6, 4)).at[s[0], s[1]].set(g) @ s[4]) ** 2
    )
)
hess("two_args_hessian", (jnp.ones(3), jnp.asarray(rng.normal(size=3))), argnums=1)(
    lambda a, b: jnp.sum(a * b**2) + b[0] * b[2]
)
hess("scan_energy", x7)(
    lambda x: lax.scan(lambda c, xi: (c + xi**2 * c, None), 1.0, x[:3])[0] + jnp.sum(x[3:] ** 3)
)

# -- additional families --------------------------------------------------------------------
_M3 = np.array([[0.3, 2.0, -1.0], [1.5, -0.2, 0.7], [-0.4, 0.9, 1.1]])  # pivots move with x
jac("lu_factor", (jnp.asarray(rng.normal(size=3)),), points=200, exact=False,
    why="the rule covers every row order; one (entry, diagonal parameter) pair is never met")(
    lambda x: jax.scipy.linalg.lu_factor(_M3 + jnp.diag(x))[0].reshape(-1)
)
jac("det", (jnp.asarray(rng.normal(size=3)),))(lambda x: jnp.linalg.det(_M[:3, :3] + jnp.diag(x)))
jac("scan_long_fixed_point", (jnp.asarray(rng.normal(size=6)),), exact=False,
    why="beyond the unroll budget: one abstract iteration stands for all")(
    lambda x: lax.scan(lambda c, xi: (c * 0.999 + xi[0] * 1e-3, c), 0.0,
                       jnp.tile(x[:2], (150_000, 1)))[1][-3:]
)
jac("while_widening", (jnp.asarray(rng.normal(size=80)),), exact=False,
    why="unknown trip count and a long dependency chain: widened after 64 rounds")(
    lambda x: lax.while_loop(
        lambda c: c[0] < 6.0, lambda c: c.at[1:].add(0.1 * c[:-1]).at[0].add(1.0), x
    )
)
_Sr = sparse.BCSR.fromdense(_A)
jac("bcsr_matvec_const", x5)(lambda x: _Sr @ x)
jac("vmap_rows", (jnp.asarray(rng.normal(size=(3, 4))),))(
    lambda x: jax.vmap(lambda r: r[1:] * r[:-1])(x).reshape(-1)
)
jac("grad_inside", x5)(lambda x: jax.grad(lambda y: jnp.sum(y[1:] ** 2 * y[:-1]))(x))
hess("tuple_argnums_block", (jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.normal(size=2))),
     argnums=0)(lambda a, b: jnp.sum(a[:2] * b) ** 2 + a[2])
jac("reshape_with_permutation", (jnp.asarray(rng.normal(size=20)),))(
    lambda x: jnp.ravel(x.reshape(5, 4) * jnp.arange(4.0), order="F") * x[::-1]
)
jac("scatter_then_fortran_ravel", x5)(
    lambda x: jnp.ravel(jnp.zeros((3, 4)).at[np.array([0, 2, 1]), np.array([3, 0, 1])].set(
        x[:3] ** 2), order="F")
)

# -- issue 15: primitives JAX emits that fell to the all-to-all fallback ---------------------
x6 = (jnp.asarray(rng.normal(size=6)),)
jac("tile", x6)(lambda x: jnp.tile(x, 3) * jnp.arange(1.0, 19.0))
jac("tile_2d", m34)(lambda x: jnp.tile(x, (2, 1)).reshape(-1) ** 2)
jac("unstack", x6)(lambda x: jnp.unstack(x.reshape(3, 2))[1] * x[:2])
jac("unstack_all", m34)(lambda x: sum(r * (k + 1.0) for k, r in enumerate(jnp.unstack(x, axis=1))))
jac("checkpoint", x7)(lambda x: jax.checkpoint(lambda y: y[1:] * y[:-1])(x))
jac("checkpoint_policy", x7)(
    lambda x: jax.checkpoint(lambda y: jnp.sin(y[2:]) * y[:-2],
                             policy=jax.checkpoint_policies.nothing_saveable)(x)
)
jac("checkpoint_name", x5)(
    lambda x: checkpoint_name(x[::-1] ** 2, "a") * x
)
hess("checkpoint_energy", x7)(lambda x: jax.checkpoint(lambda y: jnp.sum(y[1:] ** 2 * y[:-1]))(x))
jac("split_three", x7)(lambda x: jnp.concatenate(jnp.split(x, [1, 4])[::-1]) * x)
hess("tanh_hessian", x5)(lambda x: jnp.sum(jnp.tanh(x[1:] * x[:-1])))
jac("log2_exp2", x5)(lambda x: jnp.log2(x**2 + 1) + jnp.exp2(x[::-1]))
jac("random_noise", x5)(lambda x: x * jax.random.normal(jax.random.key(0), (5,)) + x[0])
jac("zeros_like_grad", x5)(lambda x: jax.grad(lambda y: jnp.sum(y[:2] ** 2))(x) + x[::-1] * 0)
jac("approx_max_k", m34, points=24)(lambda x: jax.lax.approx_max_k(x, 2)[0].reshape(-1))
jac("lax_reduce_custom", m34)(
    lambda x: lax.reduce(x, 0.0, lambda a, b: a + b * b, (1,))
)
jac("maxpool_jvp", (jnp.asarray(rng.normal(size=(4, 6))),), points=24)(
    lambda x: jax.jvp(lambda y: lax.reduce_window(y, -jnp.inf, lax.max, (2, 2), (2, 2), "VALID"),
                      (x,), (x[::-1] ** 2,))[1].reshape(-1)
)
hess("maxpool_hessian", (jnp.asarray(rng.normal(size=(4, 6))),), points=24, exact=False,
     why="the max and the position it is taken at are one element; detection unites the window")(
    lambda x: jnp.sum(lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (2, 2), "VALID") ** 2)
)
jac("ldexp", x5)(lambda x: jnp.ldexp(x, jnp.array([1, 2, 3, 4, 5])) + jnp.ldexp(x[::-1], 2))
jac("frexp_mantissa", x5)(lambda x: jnp.frexp(x**2 + 1.0)[0] * x)


@jax.custom_jvp
def _sin_and_order(x):
    return jnp.sin(x), jnp.argsort(jnp.arange(x.shape[0]))


@_sin_and_order.defjvp
def _sin_and_order_jvp(p, t):
    (x,), (dx,) = p, t
    y, order = _sin_and_order(x)
    return (y, order), (jnp.cos(x) * dx, np.zeros(order.shape, jax.dtypes.float0))


_PERM = jnp.array([4, 0, 2, 1, 3])


@jax.custom_jvp
def _permuted_twice(x):
    return x[_PERM] * 2


_permuted_twice.defjvp(lambda p, t: (_permuted_twice(p[0]), t[0][_PERM] * 2))

jac("custom_jvp_float0_tangent", x5)(lambda x: _sin_and_order(x)[0] * x[_sin_and_order(x)[1]])
jac("custom_jvp_closed_index", x5)(lambda x: _permuted_twice(x) + x[0])

# -- issue 15: grouped and depthwise convolutions, per-tap kernels --------------------------
_img = (jnp.asarray(rng.normal(size=(2, 4, 5, 6))),)
# kernels drawn once (drawing inside the function would change it from call to call)
_K_groups = jnp.asarray(rng.normal(size=(6, 2, 3, 3)))
_K_depth = jnp.asarray(rng.normal(size=(4, 1, 3, 3)))
_K_batch = jnp.asarray(rng.normal(size=(6, 4, 2, 2)))
jac("conv_feature_groups", _img)(
    lambda x: lax.conv_general_dilated(x, _K_groups, (1, 1),
                                       "SAME", feature_group_count=2).reshape(-1)
)
jac("conv_depthwise", _img)(
    lambda x: lax.conv_general_dilated(x, _K_depth, (2, 1),
                                       "SAME", feature_group_count=4).reshape(-1)
)
jac("conv_batch_groups", _img)(
    lambda x: lax.conv_general_dilated(x, _K_batch, (1, 1),
                                       "VALID", batch_group_count=2).reshape(-1)
)
jac("conv_depthwise_nhwc", (jnp.asarray(rng.normal(size=(1, 4, 4, 5))),))(
    lambda x: lax.conv_general_dilated(x, jnp.ones((3, 3, 1, 5)), (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=5).reshape(-1)
)
jac("conv_grouped_kernel_param", (jnp.asarray(rng.normal(size=(6, 2, 3, 3))),))(
    lambda k: lax.conv_general_dilated(_img[0], k, (2, 1), "SAME",
                                       feature_group_count=2).reshape(-1)
)
jac("conv_dilated_strided", _img)(
    lambda x: lax.conv_general_dilated(x, jnp.ones((2, 2, 2, 2)), (2, 1), ((1, 0), (0, 1)),
                                       lhs_dilation=(1, 2), rhs_dilation=(2, 1),
                                       feature_group_count=2).reshape(-1)
)
jac("conv_sparse_kernel", _img)(
    lambda x: lax.conv(x, jnp.asarray(np.eye(3)[None, None].repeat(4, 1).repeat(2, 0)),
                       (1, 1), "SAME").reshape(-1)
)

# -- issue 15: data-dependent but bounded indices (integer intervals) ------------------------
x8 = (jnp.asarray(rng.normal(size=8)),)
jac("dynamic_slice_argmax", x8, points=48)(
    lambda x: lax.dynamic_slice(x, (jnp.argmax(x[:3]),), (3,)) * 2
)
jac("dynamic_slice_argmax_half", x8, points=48)(
    lambda x: lax.dynamic_slice(x, (jnp.argmax(x[:4]) // 2,), (3,))
)
jac("dynamic_slice_clamped", x8, points=48)(
    lambda x: lax.dynamic_slice(x, (jnp.clip(jnp.round(x[0]).astype(int), 0, 2),), (2,)) + 0.0
)
jac("dynamic_update_slice_argmin", x8, points=48)(
    lambda x: lax.dynamic_update_slice(x, x[:2] ** 2, (jnp.argmin(x[:3]) + 4,))
)
jac("index_by_argmax", x8, points=48)(lambda x: x[jnp.argmax(x[2:5]) + 2] * x[0])
jac("gather_argmax_pair", x8, points=48)(lambda x: x[jnp.array([jnp.argmax(x[:3]), 5])])
jac("scatter_at_argmax", x8, points=48)(lambda x: jnp.zeros(8).at[jnp.argmax(x[:3])].set(x[7]))
jac("switch_bounded_index", x5, points=48)(
    lambda x: lax.switch(jnp.clip(jnp.round(x[0]).astype(int), 0, 1),
                         [lambda y: y * 2, lambda y: y[::-1], lambda y: jnp.exp(y)], x)
)
jac("dynamic_slice_2d_argmax", (jnp.asarray(rng.normal(size=(4, 5))),), points=48)(
    lambda x: lax.dynamic_slice(x, (jnp.argmax(x[:2, 0]), 1), (2, 2)).reshape(-1)
)
hess("argmax_window_energy", x8, points=48, exact=False,
     why="one bounded index used twice (slice and its transpose): cases united independently")(
    lambda x: jnp.sum(lax.dynamic_slice(x, (jnp.argmax(x[:2]) + 3,), (2,)) ** 2 * x[0])
)

# -- issue 15: structured factorizations ----------------------------------------------------
_M5 = np.eye(5) * 3 + 0.1
jac("cholesky_diag_param", x5)(lambda x: jnp.linalg.cholesky(_M5 + jnp.diag(x**2)).reshape(-1))
jac("cholesky_full_param", (jnp.asarray(rng.normal(size=16)),))(
    lambda x: lax.linalg.cholesky(x.reshape(4, 4) @ x.reshape(4, 4).T + 4 * jnp.eye(4),
                                  symmetrize_input=False).reshape(-1)
)
jac("qr_tall_r", (jnp.asarray(rng.normal(size=15)),))(
    lambda x: jnp.linalg.qr(x.reshape(5, 3))[1].reshape(-1)
)
jac("qr_tall_q", (jnp.asarray(rng.normal(size=15)),))(
    lambda x: jnp.linalg.qr(x.reshape(5, 3))[0].reshape(-1)
)
jac("lu_factor_full", (jnp.asarray(rng.normal(size=16)),), points=24)(
    lambda x: jax.scipy.linalg.lu_factor(x.reshape(4, 4))[0].reshape(-1)
)
jac("lu_factor_tall", (jnp.asarray(rng.normal(size=15)),), points=200)(
    lambda x: jax.scipy.linalg.lu_factor(x.reshape(5, 3))[0].reshape(-1)
)
_L4 = np.tril(_M5[:4, :4])
for _left in (True, False):
    for _lower in (True, False):
        for _tr in (False, True):
            _A4 = _L4 if _lower else _L4.T
            _bs = (4, 3) if _left else (3, 4)
            jac(f"triangular_solve_b_l{_left:d}_lo{_lower:d}_t{_tr:d}",
                (jnp.asarray(rng.normal(size=12)),))(
                lambda b, A=_A4, s=_bs, le=_left, lo=_lower, t=_tr: lax.linalg.triangular_solve(
                    A, b.reshape(s), left_side=le, lower=lo, transpose_a=t).reshape(-1)
            )
            jac(f"triangular_solve_a_l{_left:d}_lo{_lower:d}_t{_tr:d}_unit",
                (jnp.asarray(rng.normal(size=16)),))(
                lambda a, s=_bs, le=_left, lo=_lower, t=_tr: lax.linalg.triangular_solve(
                    a.reshape(4, 4) + 5 * jnp.eye(4), jnp.ones(s), left_side=le, lower=lo,
                    transpose_a=t, unit_diagonal=t).reshape(-1)
            )
jac("cho_solve_rhs", x5)(
    lambda b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(_M5), b)
)
jac("qr_wide_r", m34)(lambda x: jnp.linalg.qr(x)[1].reshape(-1))
jac("lu_factor_wide", m34, points=24)(lambda x: jax.scipy.linalg.lu_factor(x)[0].reshape(-1))
jac("batched_solve", (jnp.asarray(rng.normal(size=(3, 4))),))(
    lambda x: jnp.linalg.solve(jax.vmap(jnp.diag)(x) + 3.0, jnp.ones((3, 4, 1)))[..., 0]
    .reshape(-1)
)
