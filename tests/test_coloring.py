"""Colorings: validity (recover a random matrix from its compressed form), color counts,
persistence, pictures and errors."""

import dataclasses
import time

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

import sparseopt_adapters as sa
from sparseopt_adapters._coloring import ORDERS
from sparseopt_adapters._compressed import decompress

EPS = np.finfo(np.float64).eps


# -- patterns -------------------------------------------------------------------------------
def banded(m, n, lo, hi):
    """Rows i hold columns i-lo .. i+hi (clipped)."""
    r, c = [], []
    for k in range(-lo, hi + 1):
        i = np.arange(max(0, -k), min(m, n - k))
        r.append(i)
        c.append(i + k)
    return sa.SparsityPattern(np.concatenate(r), np.concatenate(c), (m, n))


def stencil(nx, ny):
    """The 2-D 5-point stencil on an nx × ny grid, natural (x fastest) order."""
    idx = np.arange(nx * ny).reshape(ny, nx)
    r, c = [idx.ravel()], [idx.ravel()]
    for a, b in ((idx[:, 1:], idx[:, :-1]), (idx[1:, :], idx[:-1, :])):
        r += [a.ravel(), b.ravel()]
        c += [b.ravel(), a.ravel()]
    n = nx * ny
    return sa.SparsityPattern(np.concatenate(r), np.concatenate(c), (n, n))


def arrow(m, n, row=0, col=0):
    """Diagonal plus one dense row and one dense column."""
    d = np.eye(m, n, dtype=bool)
    d[row, :] = True
    d[:, col] = True
    return sa.SparsityPattern.from_dense(d)


def random_pattern(m, n, density, seed):
    d = np.random.default_rng(seed).random((m, n)) < density
    return sa.SparsityPattern.from_dense(d)


def random_symmetric(n, density, seed, diag=True):
    d = np.random.default_rng(seed).random((n, n)) < density
    d = d | d.T
    if diag:
        d |= np.eye(n, dtype=bool)
    else:
        d &= ~np.eye(n, dtype=bool)
    return sa.SparsityPattern.from_dense(d)


JAC_PATTERNS = {
    "band_30x37": banded(30, 37, 2, 3),
    "band_lower_only": banded(25, 19, 4, 0),
    "stencil_6x7": stencil(6, 7),
    "arrow_20x24": arrow(20, 24, row=3, col=17),
    "random_40x30": random_pattern(40, 30, 0.1, 0),
    "random_17x50": random_pattern(17, 50, 0.2, 1),
    "random_dense_rows": random_pattern(12, 9, 0.7, 2),
    "empty_rows_cols": sa.SparsityPattern([1, 1, 4], [0, 5, 5], (6, 8)),
    "empty": sa.SparsityPattern([], [], (3, 4)),
    "single": sa.SparsityPattern([2], [1], (3, 4)),
    "one_row": sa.SparsityPattern.from_dense(np.ones((1, 9))),
}

SYM_PATTERNS = {
    "band4_40": banded(40, 40, 4, 4),
    "tridiag_30": banded(30, 30, 1, 1),
    "arrow_25": arrow(25, 25, row=24, col=24),
    "stencil_7x6": stencil(7, 6),
    "random_40": random_symmetric(40, 0.08, 3),
    "random_no_diag_35": random_symmetric(35, 0.1, 4, diag=False),
    "diagonal_9": sa.SparsityPattern.identity(9),
    "two_blocks": sa.SparsityPattern.from_dense(np.kron(np.eye(3), np.ones((4, 4)))),
}


# -- the validity helper ----------------------------------------------------------------------
def random_values(pattern, rng, kind):
    if kind == "integer":
        return rng.integers(1, 1000, pattern.nnz).astype(float) * rng.choice([-1, 1], pattern.nnz)
    # ill-scaled: magnitudes log-uniform over 1e-8 .. 1e8, random signs
    return 10.0 ** rng.uniform(-8, 8, pattern.nnz) * rng.choice([-1, 1], pattern.nnz)


def compress(coloring, matrix):
    """The compressed form computed with dense numpy from the seeds (independent of the
    decompression index data)."""
    fwd, rev = coloring.seeds()
    return np.concatenate([(matrix @ fwd.T).T.ravel(), (rev @ matrix).ravel()])


def recover(coloring, values):
    """Values on the pattern -> matrix -> compressed form -> decompressed values."""
    p = coloring.pattern
    a = np.zeros(p.shape)
    a[p.rows, p.cols] = values
    return np.asarray(decompress(coloring, compress(coloring, a)))


def symmetric_values(pattern, rng, kind):
    v = random_values(pattern, rng, kind)
    low = pattern.rows >= pattern.cols
    a = np.zeros(pattern.shape)
    a[pattern.rows[low], pattern.cols[low]] = v[low]
    a = a + np.tril(a, -1).T
    return a[pattern.rows, pattern.cols]


def assert_recovers_jacobian(coloring, rng):
    for kind in ("integer", "ill"):
        v = random_values(coloring.pattern, rng, kind)
        out = recover(coloring, v)
        # direct decompression reads every entry from exactly one product: bit-exact
        np.testing.assert_array_equal(out, v, err_msg=f"{coloring!r} ({kind} values)")


def tree_sums(coloring, values):
    """For an acyclic coloring: per entry, the sum of |values| over the 2-colored tree that
    holds it (computed here from the colors alone, independently of the library)."""
    p = coloring.pattern
    col = coloring.column_colors
    r, c = p.rows, p.cols
    out = np.abs(values).astype(float)
    off = r != c
    pairs = np.stack([np.minimum(col[r], col[c]), np.maximum(col[r], col[c])], axis=1)
    for a, b in {tuple(x) for x in pairs[off]}:
        sel = off & (pairs[:, 0] == a) & (pairs[:, 1] == b)
        g = sp.coo_array((np.ones(sel.sum()), (r[sel], c[sel])), shape=p.shape)
        _, lab = csgraph.connected_components(g, directed=False)
        comp = lab[r[sel]]
        tot = np.bincount(comp, weights=np.abs(values[sel]))
        out[sel] = tot[comp]
    return out


def assert_recovers_hessian(coloring, rng):
    p = coloring.pattern
    v = symmetric_values(p, rng, "integer")
    np.testing.assert_array_equal(recover(coloring, v), v, err_msg=f"{coloring!r} (integers)")
    v = symmetric_values(p, rng, "ill")
    out = recover(coloring, v)
    if coloring.mode == "star":
        np.testing.assert_array_equal(out, v, err_msg=f"{coloring!r} (ill-scaled)")
    else:
        # substitution: each entry is exact up to rounding of the sums along its tree
        bound = 32 * EPS * tree_sums(coloring, v)
        bad = np.abs(out - v) > bound
        assert not bad.any(), (
            f"{coloring!r}: {bad.sum()} ill-scaled entries off by more than the rounding "
            f"bound, worst ratio {np.max(np.abs(out - v) / bound):.3g}"
        )
        assert np.all(np.abs(out - v) <= 1e-6 * np.abs(v) + bound)


# -- validity -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(JAC_PATTERNS))
@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional", "auto"])
def test_jacobian_colorings_recover_random_matrices(name, mode):
    rng = np.random.default_rng(7)
    p = JAC_PATTERNS[name]
    for order in ("best",) + ORDERS:
        c = sa.color_jacobian(p, mode=mode, order=order, warn=False)
        assert c.pattern == p
        if mode != "auto":
            assert c.mode == mode
        assert_recovers_jacobian(c, rng)


@pytest.mark.parametrize("name", list(SYM_PATTERNS))
@pytest.mark.parametrize("method", ["star", "acyclic", "auto"])
def test_hessian_colorings_recover_random_matrices(name, method):
    rng = np.random.default_rng(8)
    p = SYM_PATTERNS[name]
    for order in ("best",) + ORDERS:
        c = sa.color_hessian(p, method=method, order=order, warn=False)
        assert c.pattern == p
        assert_recovers_hessian(c, rng)


def test_explicit_permutation_order():
    p = stencil(5, 4)
    perm = np.random.default_rng(0).permutation(p.shape[1])
    c = sa.color_jacobian(p, mode="forward", order=perm)
    assert c.order == "custom"
    assert_recovers_jacobian(c, np.random.default_rng(0))
    with pytest.raises(ValueError, match="permutation"):
        sa.color_jacobian(p, mode="forward", order=perm[:-1])


def test_recovery_helper_catches_a_corrupted_product():
    """The checks above can fail: one product off by 1e-9 relative is caught for both the
    direct (bit-exact) and the substitution (rounding bound) comparison."""
    rng = np.random.default_rng(3)
    for method in ("star", "acyclic"):
        p = SYM_PATTERNS["band4_40"]
        c = sa.color_hessian(p, method=method)
        v = symmetric_values(p, rng, "ill")
        a = np.zeros(p.shape)
        a[p.rows, p.cols] = v
        comp = compress(c, a)
        k = np.argmax(np.abs(comp))
        comp[k] *= 1 + 1e-9
        out = np.asarray(decompress(c, comp))
        if method == "star":
            assert np.any(out != v)
        else:
            assert np.any(np.abs(out - v) > 32 * EPS * tree_sums(c, v))


def test_invalid_colors_are_rejected():
    p = banded(6, 6, 1, 1)
    with pytest.raises(ValueError, match="Invalid forward coloring"):
        sa.coloring_from_colors(p, "forward", [0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="Invalid reverse coloring"):
        sa.coloring_from_colors(p, "reverse", [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="Invalid star coloring"):
        sa.coloring_from_colors(p, "star", [0, 1, 0, 1, 0, 1])  # a 2-colored path
    with pytest.raises(ValueError, match="Invalid acyclic coloring"):
        sa.coloring_from_colors(p, "acyclic", [0, 0, 1, 2, 0, 1])
    ring = np.eye(4) + np.roll(np.eye(4), 1, 1) + np.roll(np.eye(4), -1, 1)
    cyc = sa.SparsityPattern.from_dense(ring)
    with pytest.raises(ValueError, match="cycle"):
        sa.coloring_from_colors(cyc, "acyclic", [0, 1, 0, 1])  # the 4-cycle in 2 colors
    with pytest.raises(ValueError, match="one color per column"):
        sa.coloring_from_colors(p, "forward", [0, 1, 2])
    # and the valid ones are accepted
    assert sa.coloring_from_colors(p, "forward", [0, 1, 2, 0, 1, 2]).n_colors == 3
    assert sa.coloring_from_colors(p, "acyclic", [0, 1, 0, 1, 0, 1]).n_colors == 2


# -- color counts ---------------------------------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(1, 1), (2, 2), (0, 3), (4, 1), (5, 5)])
def test_banded_jacobian_hits_the_lower_bound(lo, hi):
    for m, n in ((60, 60), (50, 73), (81, 40)):
        p = banded(m, n, lo, hi)
        lb = int(p.row_counts().max())
        c = sa.color_jacobian(p, mode="forward")
        assert c.n_colors == lb, (c, lb)
        assert_recovers_jacobian(c, np.random.default_rng(0))


@pytest.mark.parametrize("nx,ny", [(7, 7), (10, 10), (12, 9), (20, 20), (13, 30)])
def test_stencil_jacobian_hits_the_lower_bound(nx, ny):
    p = stencil(nx, ny)
    assert int(p.row_counts().max()) == 5
    for mode in ("forward", "reverse", "auto"):
        c = sa.color_jacobian(p, mode=mode)
        assert c.n_colors == 5, c
    assert_recovers_jacobian(c, np.random.default_rng(0))


def test_arrowhead_hessian_star_at_most_three_hvps():
    for n in (10, 50, 300):
        p = arrow(n, n, row=n - 1, col=n - 1)
        c = sa.color_hessian(p, method="star")
        assert c.n_colors <= 3, c
        assert_recovers_hessian(c, np.random.default_rng(n))


def test_banded_hessian_acyclic_beats_star():
    p = banded(60, 60, 4, 4)
    star = sa.color_hessian(p, method="star")
    acyc = sa.color_hessian(p, method="acyclic")
    assert acyc.n_colors < star.n_colors, (acyc, star)
    assert acyc.n_colors == 5  # the clique of 5 consecutive vertices is a lower bound
    auto = sa.color_hessian(p)
    assert auto.mode == "acyclic" and auto.n_colors == acyc.n_colors


def test_auto_hessian_prefers_star_when_acyclic_saves_little():
    p = arrow(30, 30, row=29, col=29)
    assert sa.color_hessian(p).mode == "star"
    # tridiagonal: acyclic 2 colors, star 3 -- one color does not pay for the substitution
    p = banded(50, 50, 1, 1)
    assert sa.color_hessian(p, method="acyclic").n_colors == 2
    assert sa.color_hessian(p, method="star").n_colors == 3
    assert sa.color_hessian(p).mode == "star"


def test_dense_row_and_column_bicoloring_at_most_four_products():
    for m, n, r, c_ in ((40, 40, 0, 0), (30, 45, 7, 44), (60, 25, 59, 3)):
        p = arrow(m, n, row=r, col=c_)
        fwd = sa.color_jacobian(p, mode="forward", warn=False)
        rev = sa.color_jacobian(p, mode="reverse", warn=False)
        assert fwd.n_colors == n and rev.n_colors == m
        bi = sa.color_jacobian(p, mode="bidirectional")
        assert bi.n_colors <= 4, bi
        assert bi.n_forward >= 1 and bi.n_reverse >= 1
        assert_recovers_jacobian(bi, np.random.default_rng(m))
        auto = sa.color_jacobian(p)
        assert auto.mode == "bidirectional" and auto.n_colors == bi.n_colors


def test_auto_picks_reverse_when_rows_are_few():
    p = sa.SparsityPattern.from_dense(np.ones((3, 200), bool))
    c = sa.color_jacobian(p, warn=False)
    assert c.mode == "reverse" and c.n_colors == 3
    c = sa.color_jacobian(p.T, warn=False)
    assert c.mode == "forward" and c.n_colors == 3


def test_large_banded_pattern_uses_the_vectorised_cyclic_coloring():
    p = banded(200_000, 200_000, 2, 2)
    t = time.perf_counter()
    c = sa.color_jacobian(p)
    elapsed = time.perf_counter() - t
    assert c.n_colors == 5 and c.order == "cyclic"
    assert elapsed < 10  # ~0.1 s here; generous for a loaded machine


def test_dense_coloring_warns():
    p = sa.SparsityPattern.from_dense(np.ones((20, 20), bool))
    with pytest.warns(sa.DenseColoringWarning, match="does not pay"):
        sa.color_jacobian(p)
    with pytest.warns(sa.DenseColoringWarning):
        sa.color_hessian(p)


# -- persistence, identity, pictures ----------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: sa.color_jacobian(stencil(6, 5), mode="forward"),
        lambda: sa.color_jacobian(random_pattern(20, 14, 0.2, 5), mode="reverse"),
        lambda: sa.color_jacobian(arrow(15, 18), mode="bidirectional"),
        lambda: sa.color_hessian(banded(20, 20, 3, 3), method="star"),
        lambda: sa.color_hessian(random_symmetric(25, 0.1, 6), method="acyclic"),
    ],
)
def test_save_load_round_trip(tmp_path, make):
    c = make()
    f = tmp_path / "coloring.npz"
    c.save(f)
    d = sa.ColoringResult.load(f)
    assert d == c and hash(d) == hash(c)
    assert (d.mode, d.order, d.n_forward, d.n_reverse) == (c.mode, c.order, c.n_forward,
                                                          c.n_reverse)
    np.testing.assert_array_equal(d.gather, c.gather)
    np.testing.assert_array_equal(d.column_colors, c.column_colors)
    np.testing.assert_array_equal(d.row_colors, c.row_colors)
    if c.substitution is not None:
        for a, b in zip(c.substitution.arrays(), d.substitution.arrays(), strict=True):
            np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    if c.is_symmetric:
        assert_recovers_hessian(d, rng)
    else:
        assert_recovers_jacobian(d, rng)


def test_result_is_immutable_and_read_only():
    c = sa.color_jacobian(banded(8, 8, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mode = "reverse"
    with pytest.raises(ValueError):
        c.gather[0] = 3


def test_repr_str_and_labels():
    c = sa.color_jacobian(banded(6, 6, 1, 1), mode="forward")
    assert repr(c) == "ColoringResult(6×6, nnz=16, forward, 3 colors, order=cyclic)"
    lines = str(c).splitlines()
    assert lines[0] == repr(c)
    assert lines[1] == "0 1 · · · ·"
    assert lines[2] == "0 1 2 · · ·"
    b = sa.color_jacobian(arrow(10, 10), mode="bidirectional")
    assert "JVPs +" in repr(b) and "VJPs" in repr(b)
    np.testing.assert_array_equal(np.unique(b.entry_colors()), np.arange(b.n_colors))


def test_spy_draws_colors():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    ax = sa.color_hessian(banded(12, 12, 2, 2)).spy()
    assert ax.collections and "ColoringResult" not in ax.get_title()  # the pattern's title


def test_bad_arguments():
    p = banded(5, 5, 1, 1)
    with pytest.raises(TypeError, match="SparsityPattern"):
        sa.color_jacobian(np.ones((3, 3)))
    with pytest.raises(ValueError, match="mode must be"):
        sa.color_jacobian(p, mode="sideways")
    with pytest.raises(ValueError, match="Unknown vertex order"):
        sa.color_jacobian(p, order="alphabetical")
    with pytest.raises(ValueError, match="square"):
        sa.color_hessian(banded(4, 5, 1, 1))
    with pytest.raises(ValueError, match="method must be"):
        sa.color_hessian(p, method="magic")


def test_save_load_agree_on_the_npz_suffix(tmp_path):
    """numpy's savez appends ``.npz``; load finds the file under the name given to save."""
    c = sa.color_hessian(banded(12, 12, 2, 2), method="acyclic")
    c.save(tmp_path / "c")  # numpy writes c.npz
    assert sa.ColoringResult.load(tmp_path / "c") == c  # was FileNotFoundError
    assert sa.ColoringResult.load(str(tmp_path / "c")) == c
    assert sa.ColoringResult.load(tmp_path / "c.npz") == c
    with open(tmp_path / "c.npz", "rb") as fh:
        assert sa.ColoringResult.load(fh) == c


def test_load_of_a_missing_corrupt_or_foreign_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="ColoringResult.load: no file .*ColoringResult"
                                                r"\.save"):
        sa.ColoringResult.load(tmp_path / "missing")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(ValueError, match="not a file written by ColoringResult.save.*not an "
                                         ".npz archive"):
        sa.ColoringResult.load(tmp_path / "junk.npz")  # was numpy's "pickled (object) data"
    banded(5, 5, 1, 1).save(tmp_path / "pattern.npz")  # a pattern is not a coloring
    with pytest.raises(ValueError, match="ColoringResult.save.*not .*'mode'"):
        sa.ColoringResult.load(tmp_path / "pattern.npz")
    c = sa.color_jacobian(banded(6, 6, 1, 1))
    c.save(tmp_path / "bad_mode.npz")
    z = dict(np.load(tmp_path / "bad_mode.npz"))
    np.savez(tmp_path / "bad_mode.npz", **{**z, "mode": np.array("sideways")})
    with pytest.raises(ValueError, match="unknown coloring mode 'sideways'"):
        sa.ColoringResult.load(tmp_path / "bad_mode.npz")
