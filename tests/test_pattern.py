"""SparsityPattern persistence and the package's environment switches."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import sparseopt_adapters as sa


def test_save_load_agree_on_the_npz_suffix(tmp_path):
    p = sa.SparsityPattern.from_dense(np.eye(4, 5) + np.eye(4, 5, k=1))
    p.save(tmp_path / "p")  # numpy writes p.npz
    assert os.listdir(tmp_path) == ["p.npz"]
    assert sa.SparsityPattern.load(tmp_path / "p") == p  # was FileNotFoundError
    assert sa.SparsityPattern.load(str(tmp_path / "p")) == p
    assert sa.SparsityPattern.load(tmp_path / "p.npz") == p
    with open(tmp_path / "p.npz", "rb") as fh:  # an open file works too
        assert sa.SparsityPattern.load(fh) == p


def test_load_of_a_missing_corrupt_or_foreign_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file .*missing.*missing\.npz"):
        sa.SparsityPattern.load(tmp_path / "missing")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a file written by SparsityPattern.save.*not an "
                       ".npz archive") as e:
        sa.SparsityPattern.load(tmp_path / "junk.npz")
    assert "pickled" not in str(e.value)
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(ValueError, match=r"has the arrays \['a'\]"):
        sa.SparsityPattern.load(tmp_path / "other.npz")
    np.savez(tmp_path / "objects.npz", rows=np.array([{}], dtype=object), cols=np.arange(1),
             shape=np.arange(2))
    with pytest.raises(ValueError, match="Python objects"):
        sa.SparsityPattern.load(tmp_path / "objects.npz")
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as z:
        z.writestr("rows.npy", b"\x93NUMPY")
    with pytest.raises(ValueError, match="not a file written by SparsityPattern.save"):
        sa.SparsityPattern.load(tmp_path / "trunc.npz")


def test_env_flag_parses_booleans(monkeypatch):
    from sparseopt_adapters._env import env_flag as _env_flag

    for raw, want in [("", False), ("0", False), ("false", False), ("No", False),
                      ("off", False), ("1", True), ("TRUE", True), ("yes", True), ("on", True)]:
        monkeypatch.setenv("SPARSEOPT_TEST_FLAG", raw)
        assert _env_flag("SPARSEOPT_TEST_FLAG") is want, raw
    monkeypatch.setenv("SPARSEOPT_TEST_FLAG", "maybe")
    with pytest.raises(ValueError, match="SPARSEOPT_TEST_FLAG='maybe' is not a boolean"):
        _env_flag("SPARSEOPT_TEST_FLAG")


def _x64_after_import(value):
    env = dict(os.environ, SPARSEOPT_NO_X64=value, JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    code = "import sparseopt_adapters, jax; print(jax.config.jax_enable_x64)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_no_x64_zero_keeps_float64_and_garbage_raises():
    out = _x64_after_import("0")  # turned float64 *off* before the fix
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    out = _x64_after_import("1")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    out = _x64_after_import("sometimes")
    assert out.returncode != 0 and "SPARSEOPT_NO_X64='sometimes' is not a boolean" in out.stderr
