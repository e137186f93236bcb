"""Sharded compressed derivatives on 4 simulated CPU devices: the colour axis (issue 9) and
the variable axis (issue 17).

The device count of the host platform is fixed when JAX starts, so the checks run in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; it prints one JSON
object that the tests below read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    jax.config.update("jax_enable_x64", True)
    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import (
        color_mesh, padded_values, seed_sharding, shard_variables, sharded_products,
        variable_mesh)

    def bratu(N, lam=6.0):
        h2 = 1.0 / (N + 1) ** 2

        def r(u_flat):
            u = u_flat.reshape(N, N)
            up = jnp.pad(u, 1)
            lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4.0 * u
            return (lap / h2 + lam * jnp.exp(u)).reshape(-1)

        return r

    def banded(x):  # pentadiagonal Hessian
        return jnp.sum((x[2:] - x[:-2] ** 2) ** 2) + jnp.sum(jnp.sin(x[1:] * x[:-1]) + x[1:] ** 4)

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

    out = {"devices": len(jax.devices())}
    mesh = color_mesh()
    N = 10
    r = bratu(N)
    u = jnp.linspace(0.0, 1.0, N * N)
    x = jnp.cos(jnp.arange(40.0))
    cases = [
        ("jac_forward", lambda **k: sa.sparse_jacobian(r, u, mode="forward", **k), u),
        ("jac_reverse", lambda **k: sa.sparse_jacobian(r, u, mode="reverse", **k), u),
        ("hess", lambda **k: sa.sparse_hessian(banded, x, **k), x),
    ]
    for name, make, arg in cases:
        for chunk in (None, 2):
            ref = make(chunk_size=chunk)
            shd = make(chunk_size=chunk, mesh=mesh)
            products = sharded_products(shd, arg)
            c = ref.n_colors
            out[f"{name}/{chunk}"] = {
                "n_colors": c,
                "same_pattern": bool(
                    np.array_equal(ref.pattern.rows, shd.pattern.rows)
                    and np.array_equal(ref.pattern.cols, shd.pattern.cols)
                ),
                "values_rel": rel(shd.values(arg), ref.values(arg)),
                "dense_rel": rel(shd.todense(arg), jax.jacfwd(r)(u) if name != "hess"
                                 else jax.hessian(banded)(x)),
                "compressed_rel": rel(shd.compressed(arg), ref.compressed(arg)),
                "batch_shape": list(products.shape),
                "batch_devices": len(products.sharding.device_set),
                "batch_spec_ok": products.sharding.is_equivalent_to(
                    seed_sharding(mesh), products.ndim),
                "shards": sorted(s.data.shape[0] for s in products.addressable_shards),
                "pad_zero": bool(np.all(np.asarray(products)[c:] == 0)),
                "jit_rel": rel(jax.jit(shd.values)(arg), ref.values(arg)),
            }
    # a list of devices is accepted as well as a Mesh
    j = sa.sparse_jacobian(r, u, mesh=jax.devices()[:2])
    out["device_list_rel"] = rel(j.values(u), sa.sparse_jacobian(r, u).values(u))

    # ---- the variable axis (issue 17) ----
    def ulp(a, b):  # largest difference in units in the last place
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return int(np.max(np.abs(a.view(np.int64) - b.view(np.int64)), initial=0))

    def scale_ulp(a, b):  # largest difference in ulps of the largest value (cancellation)
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b), initial=0) / np.spacing(np.max(np.abs(b))))

    def banded_r(x):  # pentadiagonal Jacobian; m = n - 4
        return (x[2:-2] ** 3 - 0.5 * x[1:-3] - 0.5 * x[3:-1] + 0.1 * x[:-4] * x[4:]
                + jnp.sin(x[2:-2]))

    def far(x):  # row i reads x[i] and x[n-1-i]: a block of rows reaches the far end
        return x * x[::-1] + jnp.sin(x)

    def pytree_r(p):  # two arguments raveled together
        a, b = p
        return jnp.concatenate([a[1:] * b[:-1], jnp.cos(a) - b ** 2])

    vmesh = variable_mesh()
    NB = 24  # 2-D grid 24 x 24 = 576 variables
    rb = bratu(NB)
    ub = jnp.asarray(0.1 + 0.01 * np.sin(np.arange(NB * NB)))
    xb = jnp.asarray(np.cos(np.arange(1000.0)))
    xf = jnp.asarray(np.cos(np.arange(64.0)))
    pa, pb = jnp.asarray(np.cos(np.arange(400.0))), jnp.asarray(np.sin(np.arange(400.0)))
    vcases = [
        ("stencil_fwd", lambda **k: sa.sparse_jacobian(rb, ub, mode="forward", **k), (ub,),
         lambda: jax.jacfwd(rb)(ub)),
        ("stencil_rev", lambda **k: sa.sparse_jacobian(rb, ub, mode="reverse", **k), (ub,),
         lambda: jax.jacfwd(rb)(ub)),
        ("banded_fwd", lambda **k: sa.sparse_jacobian(banded_r, xb, mode="forward", **k),
         (xb,), lambda: jax.jacfwd(banded_r)(xb)),
        ("banded_rev", lambda **k: sa.sparse_jacobian(banded_r, xb, mode="reverse", **k),
         (xb,), lambda: jax.jacfwd(banded_r)(xb)),
        ("banded_chunk", lambda **k: sa.sparse_jacobian(banded_r, xb, chunk_size=2, **k),
         (xb,), lambda: jax.jacfwd(banded_r)(xb)),
        ("hess_star", lambda **k: sa.sparse_hessian(banded, xb, method="star", **k), (xb,),
         lambda: jax.hessian(banded)(xb)),
        ("hess_acyclic", lambda **k: sa.sparse_hessian(banded, xb, method="acyclic", **k),
         (xb,), lambda: jax.hessian(banded)(xb)),
        ("far", lambda **k: sa.sparse_jacobian(far, xf, mode="reverse", **k), (xf,),
         lambda: jax.jacfwd(far)(xf)),
        ("pytree", lambda **k: sa.sparse_jacobian(lambda a, b: pytree_r((a, b)), pa, pb,
                                                  argnums=(0, 1), **k), (pa, pb),
         lambda: jnp.concatenate(jax.jacfwd(lambda a, b: pytree_r((a, b)),
                                            argnums=(0, 1))(pa, pb), axis=1)),
    ]
    for name, make, args, dense in vcases:
        ref, shd = make(), make(mesh=vmesh)
        sargs = tuple(shard_variables(np.asarray(a), vmesh) for a in args)
        v0 = ref.values(*args)
        v1 = shd.values(*sargs)
        pv = padded_values(shd, *sargs)
        D, nnz = 4, shd.nnz
        p = shd.pattern
        out["v/" + name] = {
            "sharding": shd.sharding,
            "local": shd.plan.local,
            "ulp": ulp(v1, v0),
            "scale_ulp": scale_ulp(v1, v0),
            "unsharded_input_ulp": ulp(shd.values(*args), v0),
            "jit_ulp": ulp(jax.jit(shd.values)(*sargs), v0),
            "dense_rel": rel(np.asarray(dense())[p.rows, p.cols], v1),
            "compressed_ulp": ulp(shd.compressed(*sargs), ref.compressed(*args)),
            "compressed_scale_ulp": scale_ulp(shd.compressed(*sargs), ref.compressed(*args)),
            "nnz": nnz,
            "value_shards": sorted({s.data.shape[0] for s in v1.addressable_shards}),
            "value_devices": len(v1.sharding.device_set),
            "padded_len": int(pv.shape[0]),
            "padded_shards": sorted({s.data.shape[0] for s in pv.addressable_shards}),
            "padded_tail_zero": bool(np.all(np.asarray(pv)[nnz:] == 0)),
            "padded_head_ulp": ulp(np.asarray(pv)[:nnz], v0),
            "index_split": all(s.data.shape[0] * 4 == a.shape[0]
                               for a in shd.plan.arrays().values()
                               for s in a.addressable_shards),
            "resident_default_device": shd._static._dev is not None,
        }
    # the rule, through a device list (axis "devices")
    big = jnp.asarray(np.cos(np.arange(4 * 2 ** 14 + 0.0)))
    auto_big = sa.sparse_jacobian(banded_r, big, mesh=jax.devices())
    auto_small = sa.sparse_jacobian(banded_r, xb, mesh=jax.devices())
    out["rule"] = {"big": auto_big.sharding, "small": auto_small.sharding,
                   "color_mesh": sa.sparse_jacobian(banded_r, big, mesh=mesh).sharding,
                   "big_ulp": ulp(auto_big.values(big), sa.sparse_jacobian(banded_r, big)
                                  .values(big))}
    # memory: no (colours x n) batch on a device; x, index data, values split in four
    sb = shard_variables(np.asarray(big), auto_big.mesh)
    ma = auto_big.plan.values_jit.lower(auto_big.plan.arrays(), sb).compile().memory_analysis()
    n_big = big.shape[0]
    out["memory"] = {"temp": ma.temp_size_in_bytes, "output": ma.output_size_in_bytes,
                     "argument": ma.argument_size_in_bytes, "n": n_big,
                     "colors": auto_big.n_colors, "nnz": auto_big.nnz}
    # the Lagrangian Hessian goes through the same object
    lag_f = lambda x: jnp.sum(x ** 4)  # noqa: E731
    lag_c = lambda x: x[:-1] * x[1:]  # noqa: E731
    lam = jnp.asarray(np.linspace(1.0, 2.0, 999))
    l0 = sa.sparse_lagrangian_hessian(lag_f, lag_c, xb)
    l1 = sa.sparse_lagrangian_hessian(lag_f, lag_c, xb, mesh=vmesh)
    out["lagrangian"] = {"sharding": l1.hessian.sharding,
                         "ulp": ulp(l1(shard_variables(np.asarray(xb), vmesh), 1.5, lam),
                                    l0(xb, 1.5, lam))}
    # Gauss–Newton steps from a sharded x: the matrix-free routes run SPMD, the direct route
    # gathers for its host factorization
    x_gn = np.zeros(NB * NB)
    out["gn"] = {}
    for route in ("cg", "direct"):
        d0 = np.asarray(sa.gauss_newton_step(rb, jnp.asarray(x_gn), route=route))
        d1 = sa.gauss_newton_step(rb, shard_variables(x_gn, vmesh), route=route)
        out["gn"][route] = {"rel": rel(d1, d0), "split": len(d1.sharding.device_set) == 4
                            and d1.sharding.is_equivalent_to(NamedSharding(
                                vmesh, PartitionSpec("variables")), 1)}
    try:
        sa.sparse_jacobian(banded_r, jnp.ones(1001), mesh=vmesh)
        out["indivisible"] = "no error"
    except ValueError as e:
        out["indivisible"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=900,  # about 2 minutes on an idle 2-core machine, 5+ under heavy load
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


CASES = [f"{n}/{c}" for n in ("jac_forward", "jac_reverse", "hess") for c in (None, 2)]


def test_four_devices(sharded):
    assert sharded["devices"] == 4


@pytest.mark.parametrize("case", CASES)
def test_same_values_same_order(sharded, case):
    r = sharded[case]
    assert r["same_pattern"]
    # same products up to the last bit XLA may change when it fuses a batch of another size
    # (the single-device path itself differs by 1 ulp between chunk sizes)
    assert r["values_rel"] <= 1e-14
    assert r["compressed_rel"] <= 1e-14
    assert r["jit_rel"] <= 1e-14
    assert r["dense_rel"] <= 1e-12


@pytest.mark.parametrize("case", CASES)
def test_batch_is_sharded(sharded, case):
    r = sharded[case]
    c = r["n_colors"]
    c_pad = -(-c // 4) * 4
    assert r["batch_shape"][0] == c_pad
    assert r["batch_devices"] == 4
    assert r["batch_spec_ok"]
    assert r["shards"] == [c_pad // 4] * 4
    assert r["pad_zero"]


def test_device_list(sharded):
    assert sharded["device_list_rel"] <= 1e-14


def test_mesh_type_error():
    import jax.numpy as jnp

    import sparseopt_adapters as sa

    with pytest.raises(TypeError, match="mesh must be"):
        sa.sparse_jacobian(lambda x: x ** 2, jnp.ones(3), mesh="gpu")


# ---------------------------------------------------------------------------------------
# The variable axis (issue 17)
# ---------------------------------------------------------------------------------------
VCASES = ["stencil_fwd", "stencil_rev", "banded_fwd", "banded_rev", "banded_chunk",
          "hess_star", "hess_acyclic", "far", "pytree"]


@pytest.mark.parametrize("case", VCASES)
def test_variable_axis_same_values(sharded, case):
    r = sharded["v/" + case]
    assert r["sharding"] == "variables"
    # the single-device values to 1 ulp; Hessian entries that cancel (a sum of terms ~100x
    # larger) may differ by more ulps of their own, never by more than 1 ulp of the largest
    # value (the single-device batch itself differs by as much from jax.hessian there)
    if case == "hess_acyclic":
        # substitution sums and subtracts products along trees: their last-bit differences
        # add up (here 1.6 ulps of the largest value)
        assert r["compressed_scale_ulp"] <= 1.0
        assert r["scale_ulp"] <= 4.0
    elif case.startswith("hess"):
        assert r["scale_ulp"] <= 1.0
        assert r["compressed_scale_ulp"] <= 1.0
    else:
        assert r["ulp"] <= 1
        assert r["compressed_ulp"] <= 1
    assert r["unsharded_input_ulp"] == r["ulp"]
    assert r["jit_ulp"] == r["ulp"]
    assert r["padded_head_ulp"] == r["ulp"]
    assert r["dense_rel"] <= 1e-13


@pytest.mark.parametrize("case", VCASES)
def test_variable_axis_is_split(sharded, case):
    r = sharded["v/" + case]
    nnz, block = r["nnz"], -(-r["nnz"] // 4)
    assert r["padded_len"] == 4 * block
    assert r["padded_shards"] == [block]
    assert r["padded_tail_zero"]
    assert r["value_shards"] == ([nnz // 4] if nnz % 4 == 0 else [nnz])
    assert r["value_devices"] == 4
    assert r["index_split"]  # index data and colours: a quarter on each device
    # the single-device index copies are not kept on the default device
    assert not r["resident_default_device"]


def test_variable_axis_local_or_gathered(sharded):
    # stencils and bands decompress locally (halos only); an acyclic colouring's
    # substitution and a pattern reaching the far end of x take the documented gather
    for case in ("stencil_fwd", "stencil_rev", "banded_fwd", "banded_rev", "hess_star"):
        assert sharded["v/" + case]["local"], case
    assert not sharded["v/hess_acyclic"]["local"]
    assert not sharded["v/far"]["local"]


def test_rule_picks_by_the_numbers(sharded):
    r = sharded["rule"]
    assert r["big"] == "variables"  # 5 colours, 2^16 variables on 4 devices
    assert r["small"] == "colors"  # 1000 variables: too few to split
    assert r["color_mesh"] == "colors"  # color_mesh() forces the colour axis
    assert r["big_ulp"] <= 1


def test_variable_axis_memory_per_device(sharded):
    # counts, not timings: the compiled call holds no batch of products (one (n/4)-vector
    # of f64 per colour would already be c·n/4·8 bytes), and its output is a quarter of
    # the values
    r = sharded["memory"]
    assert r["output"] == r["nnz"] // 4 * 8
    assert r["temp"] < r["n"] // 4 * 8  # less than one product's share
    assert r["argument"] <= r["n"] // 4 * (8 + 1) + -(-r["nnz"] // 4) * 4 + 64


def test_variable_axis_lagrangian(sharded):
    assert sharded["lagrangian"]["sharding"] == "variables"
    assert sharded["lagrangian"]["ulp"] <= 1


def test_gauss_newton_from_sharded_x(sharded):
    # no mesh= on the solvers yet: a sharded x0 is how a GN step runs split today
    g = sharded["gn"]
    assert g["cg"]["split"]  # the step stays split over the mesh
    assert g["cg"]["rel"] <= 1e-10  # reductions over four devices: other rounding
    assert g["direct"]["rel"] == 0.0  # gathered for the host factorization: same numbers


def test_variable_mesh_needs_divisible_n(sharded):
    assert "divisible by 4" in sharded["indivisible"]
    assert "color_mesh()" in sharded["indivisible"]


def test_choose_sharding_rule():
    from sparseopt_adapters._sharding import (
        COLORS_PER_DEVICE,
        MIN_VARIABLES_PER_DEVICE,
        choose_sharding,
    )

    big = MIN_VARIABLES_PER_DEVICE * 4
    assert choose_sharding(5, 1, big) == "none"
    assert choose_sharding(5, 4, big) == "variables"
    assert choose_sharding(COLORS_PER_DEVICE * 4, 4, big) == "colors"
    assert choose_sharding(COLORS_PER_DEVICE * 4 - 1, 4, big) == "variables"
    assert choose_sharding(5, 4, big - 4) == "colors"  # too few per device
    assert choose_sharding(5, 4, big + 2) == "colors"  # 4 does not divide n
    assert choose_sharding(50, 4, big, ("variables",)) == "variables"
    assert choose_sharding(5, 4, big, ("colors",)) == "colors"
    with pytest.raises(ValueError, match="divisible"):
        choose_sharding(5, 4, big + 2, ("variables",))
    assert choose_sharding(5, 1, big, ("variables",)) == "variables"
    assert choose_sharding(5, 1, big, ("colors",)) == "none"


def _ulp(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return int(np.max(np.abs(a.view(np.int64) - b.view(np.int64)), initial=0))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_one_device_variable_path(mode):
    # the colour-at-a-time loop of the variable path, in this process (one device): the
    # same values as the batched single-device call, and as jax.jacfwd
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import padded_values, shard_variables, variable_mesh

    def r(x):
        return x[1:-1] ** 3 - x[:-2] + jnp.sin(x[2:]) * x[1:-1]

    x = jnp.asarray(np.cos(np.arange(300.0)))
    mesh = variable_mesh(jax.devices()[:1])
    ref = sa.sparse_jacobian(r, x, mode=mode)
    jac = sa.sparse_jacobian(r, x, mode=mode, mesh=mesh)
    assert jac.sharding == "variables" and jac.plan.local
    v = jac.values(shard_variables(np.asarray(x), mesh))
    assert _ulp(v, ref.values(x)) <= 1
    assert _ulp(padded_values(jac, x)[: jac.nnz], v) == 0
    p = jac.pattern
    np.testing.assert_allclose(v, np.asarray(jax.jacfwd(r)(x))[p.rows, p.cols], rtol=1e-14)


def test_one_device_variable_hessian():
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sparseopt_adapters as sa
    from sparseopt_adapters._sharding import variable_mesh

    def f(x):
        return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum(jnp.cos(x))

    x = jnp.asarray(np.linspace(-1.0, 1.0, 200))
    hess = sa.sparse_hessian(f, x, mesh=variable_mesh(jax.devices()[:1]))
    assert hess.sharding == "variables"
    H = np.asarray(jax.hessian(f)(x))
    p = hess.pattern
    v = np.asarray(hess.values(x))
    assert np.max(np.abs(v - H[p.rows, p.cols])) <= np.spacing(np.max(np.abs(H)))
    # the batched single-device values, within 1 ulp of the largest entry (entries that
    # cancel may differ by more ulps of their own; see test_variable_axis_same_values)
    ref = np.asarray(sa.sparse_hessian(f, x).values(x))
    assert np.max(np.abs(v - ref)) <= np.spacing(np.max(np.abs(ref)))


# ---------------------------------------------------------------------------------------
# Solvers take mesh= (issue 17 item 2): sa.GaussNewton, the optimistix adapter, the
# derivative evaluations of the scipy and ipopt adapters; hvp modes on the variable path
# ---------------------------------------------------------------------------------------
SOLVER_SCRIPT = textwrap.dedent(
    r"""
    import json, re, time
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optimistix as optx

    jax.config.update("jax_enable_x64", True)
    import sparseopt_adapters as sa
    from sparseopt_adapters import ipopt
    from sparseopt_adapters import optimistix as sa_optx
    from sparseopt_adapters import scipy as sa_scipy
    from sparseopt_adapters._gauss_newton import _cached_gauss_newton
    from sparseopt_adapters._sharding import shard_variables, variable_mesh

    T0 = time.perf_counter()
    mesh = variable_mesh()
    out = {"devices": len(jax.devices())}
    N = 12  # 2-D Bratu on a 12 x 12 grid: n = m = 144, 5 colours
    h2 = 1.0 / (N + 1) ** 2

    def bratu(u_flat, lam=6.0):
        u = u_flat.reshape(N, N)
        up = jnp.pad(u, 1)
        lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4.0 * u
        return (lap / h2 + lam * jnp.exp(u)).reshape(-1)

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

    def scale_ulp(a, b):  # in ulps of the largest value (entries that cancel)
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b), initial=0) / np.spacing(np.max(np.abs(b))))

    def ulp(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return int(np.max(np.abs(a.view(np.int64) - b.view(np.int64)), initial=0))

    def split(a):  # sharded along the variables over all four devices
        return (isinstance(a, jax.Array) and len(a.sharding.device_set) == 4
                and a.sharding.is_equivalent_to(mesh_sharding, a.ndim))

    from jax.sharding import NamedSharding, PartitionSpec
    mesh_sharding = NamedSharding(mesh, PartitionSpec("variables"))

    def collectives(txt):
        return {"all_gather": re.findall(r"= (\S+) all-gather\(", txt),
                "all_reduce": sorted(set(re.findall(r"= (\S+) all-reduce\(", txt))),
                "permutes": len(re.findall(r"collective-permute\(", txt))}

    # ---- sa.GaussNewton / sa.gauss_newton (item 1) ----
    x0 = np.zeros(N * N)
    gn = {}
    for route in ("direct", "cg"):
        s0 = sa.gauss_newton(bratu, x0, route=route)
        s1 = sa.gauss_newton(bratu, x0, route=route, mesh=mesh)
        g1 = _cached_gauss_newton(bratu, x0, (), route, {"mesh": mesh})  # the one solve used
        gn[route] = {"x_rel": rel(s1.x, s0.x), "success": bool(s1.success),
                     "steps": [s0.n_steps, s1.n_steps], "x_split": split(s1.x), "route": s1.route}
        if route == "direct":  # a damped step: the values of [J; sqrt(lambda) I]
            d0 = sa.gauss_newton_step(bratu, x0, route=route, damping=1e-2)
            d1 = sa.gauss_newton_step(bratu, x0, route=route, damping=1e-2, mesh=mesh)
            gn[route].update(step_rel=rel(d1, d0), step_split=split(d1))
        args = (shard_variables(x0, mesh), (), jnp.asarray(0.0), jnp.ones(N * N))
        if route == "direct":  # the compiled half of a direct step (the host solves)
            low = g1._mesh_jits[0].lower(*args, g1._mesh_index()[1], damped=False)
        else:
            low = g1._step_jit.lower(*args, damped=False, route=route)
        gn[route]["hlo"] = collectives(low.compile().as_text())
        delta, info = g1.step(shard_variables(x0, mesh))
        gn[route]["grad_split"] = split(info["grad"])
        gn[route]["delta_split"] = split(delta)
        if route == "direct":
            ref = sa.sparse_jacobian(bratu, x0)
            gn[route]["jac_ulp"] = ulp(g1._jac.values(shard_variables(x0, mesh)), ref.values(x0))
            gn[route]["jac_sharding"] = g1._jac.sharding
    # n = 4096: a host callback inside the SPMD step deadlocked the four CPU devices here
    # (XLA aborts after 40 s); with mesh= the direct route factorises outside the program
    NB = 64
    hb = 1.0 / (NB + 1) ** 2

    def bratu_big(u_flat):
        u = u_flat.reshape(NB, NB)
        up = jnp.pad(u, 1)
        lap = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4.0 * u
        return (lap / hb + 6.0 * jnp.exp(u)).reshape(-1)

    xb = np.zeros(NB * NB)
    db = [sa.gauss_newton_step(bratu_big, xb, route="direct", mesh=mesh) for _ in range(2)]
    gn["big"] = {"rel": rel(db[1], sa.gauss_newton_step(bratu_big, xb, route="direct")),
                 "split": split(db[1])}
    out["gn"] = gn
    out["t_gn"] = time.perf_counter() - T0

    # ---- the optimistix adapter (item 2) ----
    def F(y, args):
        return bratu(y)

    def E(y, args):
        return 0.5 * jnp.sum(bratu(y) ** 2)

    y0 = jnp.zeros(N * N)
    ox = {}
    for name, make, kind in (
            ("GaussNewton/cg",  # split over the mesh (no host call in the loop)
             lambda m: sa_optx.GaussNewton(1e-10, 1e-10, route="cg", mesh=m), "ls"),
            ("LevenbergMarquardt/direct/root",  # host factorisation in the loop: unsplit on CPU
             lambda m: sa_optx.LevenbergMarquardt(1e-10, 1e-10, route="direct", mesh=m),
             "root"),
            ("Newton", lambda m: sa_optx.Newton(1e-10, 1e-10, mesh=m), "min")):
        sols = []
        for m in (None, mesh):
            solver = make(m)
            if kind == "ls":
                sols.append(optx.least_squares(F, solver, y0, max_steps=64))
            elif kind == "root":
                sols.append(optx.root_find(F, solver, y0, max_steps=64))
            else:
                sols.append(optx.minimise(E, solver, y0, max_steps=64))
        ox[name] = {"rel": rel(sols[1].value, sols[0].value),
                    "ok": bool(sols[1].result == optx.RESULTS.successful),
                    "steps": [int(s.stats["num_steps"]) for s in sols]}
    out["optx"] = ox
    out["t_optx"] = time.perf_counter() - T0

    # ---- scipy and ipopt: the host solver stays on the host (item 3) ----
    n = 64
    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def chain(x):
        return jnp.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])

    con = {"type": "eq", "fun": lambda x: x[1:4] ** 2 - 0.5}
    z0 = np.full(n, 0.5)
    d0, d1 = sa_scipy.derivatives(rosen, z0), sa_scipy.derivatives(rosen, z0, mesh=mesh)
    host = {"derivatives": {"hess_ulp": ulp(d1.hess(z0).data, d0.hess(z0).data),
                            "grad_ulp": ulp(d1.jac(z0), d0.jac(z0)),
                            "hessp_rel": rel(d1.hessp(z0, z0), d0.hessp(z0, z0)),
                            "sharding": d1.hessian.sharding}}
    l0, l1 = sa_scipy.least_squares(chain, z0), sa_scipy.least_squares(chain, z0, mesh=mesh)
    host["least_squares"] = {"rel": rel(l1.x, l0.x), "nfev": [l0.nfev, l1.nfev],
                             "ok": bool(l1.success), "sharding": l1.jacobian.sharding}
    i0 = ipopt.minimize(rosen, z0, constraints=[con])
    i1 = ipopt.minimize(rosen, z0, constraints=[con], mesh=mesh)
    p1 = ipopt.Problem(rosen, z0, constraints=[con], mesh=mesh)
    host["ipopt"] = {"rel": rel(i1.x, i0.x), "nit": [i0.nit, i1.nit], "ok": bool(i1.success),
                     "sharding": [p1.nlp.jac.sharding, p1.nlp.lag.hessian.sharding]}
    out["host"] = host
    out["t_host"] = time.perf_counter() - T0

    # ---- hvp_mode on the variable path: a custom_vjp objective (item 4) ----
    @jax.custom_vjp
    def energy(x):
        return jnp.sum(x[1:] ** 3 * x[:-1])

    def fwd(x):
        return energy(x), x

    def bwd(x, g):
        d = jnp.zeros_like(x).at[1:].add(3 * x[1:] ** 2 * x[:-1]).at[:-1].add(x[1:] ** 3)
        return (g * d,)

    energy.defvjp(fwd, bwd)
    xc = np.linspace(0.5, 1.5, 40)
    ref = np.asarray(jax.jit(jax.jacrev(jax.grad(energy)))(xc))
    cv = {}
    for mode in ("auto", "rev_over_rev"):
        hs = sa.sparse_hessian(energy, xc, mode=mode, mesh=mesh)
        p = hs.pattern
        v = hs.values(shard_variables(xc, mesh))
        cv[mode] = {"mode": hs.mode, "sharding": hs.sharding,
                    "err": float(np.max(np.abs(np.asarray(v) - ref[p.rows, p.cols]))),
                    "scale_ulp": scale_ulp(v, sa.sparse_hessian(energy, xc, mode=mode).values(xc))}
    lag = sa.sparse_lagrangian_hessian(energy, lambda x: x[:-1] * x[1:], xc, mesh=mesh)
    lam = np.linspace(1.0, 2.0, 39)
    lref = sa.sparse_lagrangian_hessian(energy, lambda x: x[:-1] * x[1:], xc)
    cv["lagrangian"] = {"mode": lag.mode, "sharding": lag.hessian.sharding,
                        "scale_ulp": scale_ulp(lag(shard_variables(xc, mesh), 1.5, lam),
                                               lref(xc, 1.5, lam))}
    out["custom_vjp"] = cv
    out["t_total"] = time.perf_counter() - T0
    print("RESULT" + json.dumps(out))
    """
)


def _run_four_devices(script):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def solvers():
    # ~30 s of CPU on the 2-core box (compiles dominate; sizes are tiny)
    return _run_four_devices(SOLVER_SCRIPT)


def test_gauss_newton_mesh_same_solution(solvers):
    g = solvers["gn"]
    assert solvers["devices"] == 4
    for route in ("direct", "cg"):
        r = g[route]
        assert r["route"] == route and r["success"]
        assert r["steps"][0] == r["steps"][1]
        assert r["x_rel"] <= 1e-12, route  # final x: rtol 1e-12 of the single-device run
    # the direct route assembles J by the variable-sharded compressed Jacobian: the same
    # values (<= 1 ulp; here bit-identical), and the same host factorisation
    assert g["direct"]["jac_sharding"] == "variables"
    assert g["direct"]["jac_ulp"] <= 1
    assert g["direct"]["step_rel"] <= 1e-12  # a damped step: values of [J; sqrt(lam D)]
    assert g["direct"]["x_rel"] == 0.0
    # n = 4096 (two steps: the second one deadlocked with a host callback inside the
    # SPMD program)
    assert g["big"]["rel"] <= 1e-12 and g["big"]["split"]


def test_gauss_newton_mesh_vectors_stay_split(solvers):
    g = solvers["gn"]
    for route in ("direct", "cg"):
        r = g[route]
        assert r["x_split"] and r["delta_split"] and r["grad_split"], route
    assert g["direct"]["step_split"]
    # matrix-free: the compiled step moves only halos (collective-permutes) and scalars (the
    # CG dot products); no n- or m-vector is ever gathered
    cg = g["cg"]["hlo"]
    assert cg["all_gather"] == []
    assert cg["all_reduce"] == ["f64[]"]
    assert cg["permutes"] > 0
    # assembled: the compiled half (r, the gradient, the Jacobian's values) leaves its
    # outputs split (the host gathers the values and r once per step, outside it); only
    # the decompression halos (2 positions per device) are gathered
    gathers = g["direct"]["hlo"]["all_gather"]
    assert all(x.startswith("f64[4,") for x in gathers), gathers


@pytest.mark.parametrize("solver", ["GaussNewton/cg", "LevenbergMarquardt/direct/root",
                                    "Newton"])
def test_optimistix_mesh_same_solution(solvers, solver):
    r = solvers["optx"][solver]
    assert r["ok"]
    assert r["steps"][0] == r["steps"][1]
    assert r["rel"] <= 1e-12


def test_host_adapters_mesh_same_result(solvers):
    h = solvers["host"]
    d = h["derivatives"]
    assert d["sharding"] == "variables"
    assert d["hess_ulp"] <= 1 and d["grad_ulp"] <= 1 and d["hessp_rel"] <= 1e-14
    ls = h["least_squares"]
    assert ls["ok"] and ls["sharding"] == "variables"
    assert ls["nfev"][0] == ls["nfev"][1] and ls["rel"] <= 1e-12
    ip = h["ipopt"]
    assert ip["ok"] and ip["sharding"] == ["variables", "variables"]
    assert ip["nit"][0] == ip["nit"][1] and ip["rel"] <= 1e-12


def test_custom_vjp_hessian_on_the_variable_path(solvers):
    # a custom_vjp objective has no forward mode: "auto" picks rev_over_rev, and the
    # variable path takes its HVPs in that mode (also through the Lagrangian)
    c = solvers["custom_vjp"]
    for key in ("auto", "rev_over_rev", "lagrangian"):
        assert c[key]["mode"] == "rev_over_rev", key
        assert c[key]["sharding"] == "variables", key
        assert c[key]["scale_ulp"] <= 1.0, key
    assert c["auto"]["err"] <= 1e-13
