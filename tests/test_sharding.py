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
