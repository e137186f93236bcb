"""``benchmarks/run.py``: tables are read back, and failing or hanging scripts are reported."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules["bench_run"]


def test_markdown_tables_keep_cells_holding_pipes(run):
    text = """noise
| problem | n | solver | median s | note
|---------|---|--------|----------|------
| bratu N=50 | 2500 | ours | 0.062 | |F|=2.6e-12
| bratu N=50 | 2500 | dense | | skipped: --quick
done"""
    (tab,) = run.markdown_tables(text)
    assert tab["columns"] == ["problem", "n", "solver", "median s", "note"]
    assert tab["rows"][0] == ["bratu N=50", "2500", "ours", "0.062", "|F|=2.6e-12"]
    assert tab["rows"][1][3] == ""
    assert "\\|F\\|" in run.md_table(tab)  # escaped in the Markdown written back


def test_gauss_newton_fixed_width_table(run):
    text = "\n".join([
        "Y, B        nc      n       m   route  chosen colors  setup s  solve s steps  ms/step",
        "-" * 90,
        "dense        4    100     384  direct  direct    100     1.38    0.063     6     10.6"
        "    8e-23",
        "selection    8    484    1296    lsmr    lsmr      -     0.11    1.536     5    307.2"
        "    4e-19  (not converged: x)",
        "               auto / best fixed route: 1.21×",
    ])
    (tab,) = run.gauss_newton_table(text)
    assert len(tab["rows"]) == 2 and tab["rows"][1][-1] == "(not converged: x)"
    assert tab["notes"] == ["selection nc=8: auto / best fixed route: 1.21×"]


def test_numbers_are_formatted_compactly(run):
    assert [run.fmt(x) for x in (0.0491, 552.3, 1.2e-24, 3, None, float("nan"), "a|b")] == [
        "0.0491", "552", "1.20e-24", "3", "", "", "a\\|b"]


def test_failing_and_hanging_scripts_are_reported(run, tmp_path):
    fail = tmp_path / "bench_fail.py"
    fail.write_text("import sys\nprint('| a | b |\\n|---|---|\\n| 1 | 2 |')\n"
                    "sys.exit('boom: something broke')\n")
    hang = tmp_path / "bench_hang.py"
    hang.write_text("import time\ntime.sleep(60)\n")
    r_fail = run.run_script("fail", fail, "quick", tmp_path, timeout=60)
    r_hang = run.run_script("hang", hang, "quick", tmp_path, timeout=1)
    assert r_fail.rc == 1 and not r_fail.ok and "FAILED" in r_fail.status
    assert r_hang.timed_out and "TIMED OUT" in r_hang.status
    r_fail.tables = run.collect_tables(r_fail)
    assert r_fail.tables[0]["rows"] == [["1", "jax " + run.VERSIONS["jax"], "2"]]
    meta = {"started": "now", "machine": "test", "python": "3", "versions": run.VERSIONS,
            "load_before": 0.0, "load_after": 0.0, "total": 2.0}
    run.write_markdown([r_fail, r_hang], "quick", meta, tmp_path)
    md = (tmp_path / "README.md").read_text()
    assert "**FAILED** (exit 1)" in md and "**TIMED OUT**" in md
    assert "boom: something broke" in md  # the end of its error output is shown


def test_render_redoes_the_report_from_the_raw_output(run, tmp_path):
    r = run.Run("seed", ["python", "x.py"], rc=0, wall=1.0, stdout="hello\n", data={
        "problem": "toy", "versions": {"jax": "1", "scipy": "2"},
        "gauss_newton": {"t": [0.1, 0.2], "energy": [1.0, 1e-20], "setup_s": 1.0},
        "lbfgs": {"t": [0.1, 0.3], "energy": [1.0, 0.5], "converged": False}})
    meta = {"started": "now", "machine": "test", "python": "3", "versions": run.VERSIONS,
            "load_before": 0.0, "load_after": 0.0, "total": 1.0}
    run.save_raw(tmp_path / "runs.json", [r], meta)
    assert run.main(["--quick", "--render", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "README.md").read_text()
    assert "| sa.GaussNewton (sparse Jacobian, route auto) | jax 1 | 1 | 0.2 | 1.00e-20 |" in md
    assert (tmp_path / "seed_energy.png").stat().st_size > 1000


def test_compressed_fixed_width_table_and_units(run):
    text = "\n".join([
        "jax 0.10.2, asdex 0.5.1; median of 20 jitted calls after a warm-up", "",
        "case    colors    asdex col    ours    asdex    dense    1 JVP  ours/asdex  ours/(c·JVP)",
        "Rosenbrock Hessian n=1e+04   3   3   152µs   142µs   skipped   34µs   1.07   1.49",
        "Bratu Jacobian N=100   5   7   1.13ms   147µs   2.5s   56µs   0.77   0.41", "",
        "coloring a 1e6-column banded pattern (nnz=4999980): 0.50s, 5 colors (goal < 2 s)",
    ])
    (tab,) = run.compressed_table(text)
    assert [r[0] for r in tab["rows"]] == ["Rosenbrock Hessian n=1e+04", "Bratu Jacobian N=100"]
    assert tab["rows"][0][1:4] == ["3", "3", "152µs"] and len(tab["notes"]) == 1
    assert [run._seconds(c) for c in ("152µs", "1.13ms", "2.5s", 0.5)] == pytest.approx(
        [152e-6, 1.13e-3, 2.5, 0.5])
    assert run._seconds("skipped") is None
    r = run.Run("compressed", ["x"], rc=0, wall=1.0, stdout=text)
    r.tables = run.collect_tables(r)
    assert r.tables[0]["columns"][1] == "peer"


def test_skipped_benchmarks_are_listed_not_run(run, tmp_path):
    assert run.main(["--quick", "--only", "seed", "--skip", "seed", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "README.md").read_text()
    assert "**SKIPPED** (`--skip`): not run" in md and "Failures, skips and problems" in md
