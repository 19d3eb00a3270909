"""The papermill runner on tiny notebooks (real kernel, real papermill)."""

import json
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import REPO, make_notebook
from nbutils.cli import main
from nbutils.params import ParameterError
from nbutils.runner import (
    MALLOC_SETTINGS,
    critical_paths,
    dependency_graph,
    discover_notebooks,
    load_profile,
    notebook_minutes,
    notebook_needs,
    notebook_parameters,
    parse_override,
    resolve_notebook,
    resolve_parameters,
    run_notebook,
    run_notebooks,
)

PARAMS = 'reports_dir: str = "../reports"\nfactor: int = 2  # multiplies 21\nlabel: str = "a"\n'
SPEC = "from nbutils.params import validate_parameters\nP = validate_parameters(globals())\n"
BODY = (
    "from nbutils.reporting import write_metrics\n"
    "if P.label == 'boom':\n"
    "    raise RuntimeError('deliberate failure')\n"
    "write_metrics(P.reports_dir, '{stem}', {{'value': 21 * P.factor}}, data_source='test fixture')\n"
)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    nbs = tmp_path / "notebooks"
    for stem in ("00_first", "01_second"):
        make_notebook(nbs / f"{stem}.ipynb", PARAMS, SPEC, BODY.format(stem=stem))
    (nbs / "profiles").mkdir()
    profile = {"_common": {"factor": 3, "unused_common": 1}, "01_second": {"label": "b"}}
    (nbs / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(profile))
    return nbs


def test_notebooks_are_found_by_path_name_or_number(suite):
    first = suite / "00_first.ipynb"
    assert resolve_notebook(first, suite) == first
    assert resolve_notebook("00_first", suite) == first
    assert resolve_notebook("01", suite) == suite / "01_second.ipynb"
    assert resolve_notebook("00_first.ipynb", suite) == first
    with pytest.raises(FileNotFoundError, match=r"07_missing.*available: \['00_first', '01_second'\]"):
        resolve_notebook("07_missing", suite)
    with pytest.raises(FileNotFoundError, match="2 match"):
        resolve_notebook("0", suite)


def test_resolve_parameters_precedence():
    prof = {"_common": {"seed": 1, "x": 5}, "nb": {"x": 6}}
    got = resolve_parameters("nb", {"seed", "x", "reports_dir"}, prof, {"seed": 9, "zz": 1}, {"reports_dir": "/r"})
    assert got == {"seed": 9, "x": 6, "reports_dir": "/r"}


def test_parse_override_uses_yaml_types():
    assert parse_override("n", "3") == ("n", 3)
    assert parse_override("f", "0.5") == ("f", 0.5)
    assert parse_override("b", "true") == ("b", True)
    assert parse_override("s", "hello") == ("s", "hello")
    assert parse_override("l", "[1, 2]") == ("l", [1, 2])


def test_missing_profile_names_the_available_ones(suite):
    with pytest.raises(FileNotFoundError, match=r"available: \['tiny'\]"):
        load_profile("nope", suite)


def test_runs_in_order_with_profile_and_override(suite, tmp_path):
    reports = tmp_path / "reports"
    results = run_notebooks(
        profile="tiny", overrides={"label": "c"}, reports_dir=reports, notebooks_dir=suite, progress=False
    )
    assert [r.status for r in results] == ["ok", "ok"]
    assert json.loads((reports / "metrics" / "00_first.json").read_text())["value"] == 63
    second = json.loads((reports / "metrics" / "01_second.json").read_text())
    assert second["value"] == 63 and second["data_source"] == "test fixture"
    assert results[1].parameters["label"] == "c"  # override beats the profile section
    for stem in ("00_first", "01_second"):
        assert (reports / f"{stem}.ipynb").is_file() and (reports / f"{stem}.html").is_file()
    summary = json.loads((reports / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "ok"]
    assert summary["notebooks"][0]["metrics_file"].endswith("00_first.json")
    assert not list(reports.glob(".*tmp*")), "temporary files left behind"
    index = (reports / "index.html").read_text()
    assert 'href="00_first.html"' in index and "test fixture" in index and ">63<" in index


def test_declared_parameters_are_read_from_the_cell(suite):
    assert notebook_parameters(suite / "00_first.ipynb") == {"reports_dir": "../reports", "factor": 2,
                                                             "label": "a"}


def test_bad_parameter_stops_the_run_before_any_notebook(suite, tmp_path, capsys):
    nb = suite / "00_first.ipynb"
    code = main(["run", str(nb), "--profile", str(suite / "profiles" / "tiny.yaml"),
                 "--reports", str(tmp_path / "r"), "-p", "factor", "two", "--no-progress"])
    assert code == 2
    out = capsys.readouterr().out
    assert "00_first.ipynb" in out and "parameter 'factor' must be int" in out
    assert "factor: int" in out and "label: str" in out  # the allowed parameters
    assert not (tmp_path / "r" / "00_first.ipynb").exists()


def test_profile_typo_in_a_later_notebook_stops_the_run_first(suite, tmp_path):
    (suite / "profiles" / "typo.yaml").write_text("01_second:\n  lable: b\n")
    with pytest.raises(ParameterError, match=r"01_second.ipynb.*unknown parameter\(s\): lable"):
        run_notebooks(profile="typo", reports_dir=tmp_path / "r", notebooks_dir=suite, progress=False)
    assert not (tmp_path / "r" / "00_first.ipynb").exists()


def test_the_kernel_refuses_a_wrong_type_too(suite, tmp_path):
    result = run_notebook(suite / "00_first.ipynb", {"factor": "two"}, tmp_path / "r", progress=False)
    assert result.status == "failed"
    assert "ParameterError" in result.error and "parameter 'factor' must be int" in result.error


def test_undeclared_override_is_refused_before_running(suite, tmp_path):
    with pytest.raises(ValueError, match="not declared by any"):
        run_notebooks(profile="tiny", overrides={"nope": 1}, reports_dir=tmp_path / "r",
                      notebooks_dir=suite, progress=False)


def test_failing_notebook_is_kept_named_and_stops_the_rest(suite, tmp_path):
    reports = tmp_path / "r"
    results = run_notebooks(profile="tiny", overrides={"label": "boom"}, reports_dir=reports,
                            notebooks_dir=suite, progress=False)
    assert [r.status for r in results] == ["failed", "skipped"]
    assert "deliberate failure" in results[0].error
    executed = (reports / "00_first.ipynb").read_text()
    assert "deliberate failure" in executed  # the error is visible in the executed copy
    assert results[0].metrics_file is None


# ---- dependency graph and parallel runs ------------------------------------------------------
# Each graph notebook leaves marker files in `marks`: <stem>.started first, then (after waiting for
# the markers named in `wait_for`, up to 60 s) <stem>.seen (the notebooks finished when it
# started), <stem>.env (its thread limits) and <stem>.finished. Waiting for a marker that only a
# concurrently running notebook can write proves concurrency without timing thresholds: one after
# the other, the wait times out and the notebook fails.

GRAPH_PARAMS = (
    'reports_dir: str = "../reports"\n'
    'marks: str = ""  # folder of marker files\n'
    "wait_for: list[str] = []  # marker files (in marks) to wait for before going on\n"
    'wait_failed: str = ""  # a notebook whose failure summary.json must show before going on\n'
    "fail: bool = False\n"
    "jobs: int = 1  # the notebook's own pool (recorded in <stem>.jobs)\n"
)
GRAPH_BODY = """import json, os, time
from pathlib import Path

STEM, marks = "STEM_NAME", Path(P.marks)
finished = sorted(p.stem for p in marks.glob("*.finished"))
(marks / f"{STEM}.started").touch()


def failed(stem):
    summary = Path(P.reports_dir) / "summary.json"
    rows = json.loads(summary.read_text())["notebooks"] if summary.exists() else []
    return any(r["notebook"] == stem and r["status"] == "failed" for r in rows)


deadline = time.monotonic() + 60
while not (all((marks / m).exists() for m in P.wait_for) and (not P.wait_failed or failed(P.wait_failed))):
    if time.monotonic() > deadline:
        raise TimeoutError(f"{STEM}: waited 60 s for {P.wait_for} {P.wait_failed}")
    time.sleep(0.05)
if P.fail:
    raise RuntimeError("deliberate failure")
(marks / f"{STEM}.seen").write_text(json.dumps(finished))
names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
(marks / f"{STEM}.env").write_text(json.dumps({k: os.environ.get(k) for k in names}))
(marks / f"{STEM}.jobs").write_text(json.dumps(P.jobs))
(marks / f"{STEM}.finished").touch()
"""


def set_needs(path: Path, needs) -> Path:
    """Write ``nbutils.needs`` into a notebook's metadata."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["nbutils"] = {"needs": needs}
    nbformat.write(nb, path)
    return path


def graph_suite(root: Path, needs: dict[str, list[str]], sections: dict | None = None) -> Path:
    """Graph notebooks named by ``needs`` (stem -> needs) and a profile ``graph`` with their sections."""
    nbs, marks = root / "notebooks", root / "marks"
    marks.mkdir(parents=True)
    for stem, need in needs.items():
        path = make_notebook(nbs / f"{stem}.ipynb", GRAPH_PARAMS, SPEC, GRAPH_BODY.replace("STEM_NAME", stem))
        set_needs(path, need)
    (nbs / "profiles").mkdir()
    profile = {"_common": {"marks": str(marks)}, **(sections or {})}
    (nbs / "profiles" / "graph.yaml").write_text(yaml.safe_dump(profile))
    return nbs


def marker(root: Path, name: str):
    path = root / "marks" / name
    return json.loads(path.read_text()) if path.suffix in (".seen", ".env", ".jobs") else path.exists()


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    """00_a and 02_c independent (each waits for the other's start), 01_b needs 00_a; jobs=2."""
    root = tmp_path_factory.mktemp("graph")
    nbs = graph_suite(root, {"00_a": [], "01_b": ["00"], "02_c": []},
                      {"00_a": {"wait_for": ["02_c.started"]}, "02_c": {"wait_for": ["00_a.started"]}})
    results = run_notebooks(profile="graph", reports_dir=root / "reports", notebooks_dir=nbs, jobs=2)
    return root, results


def test_independent_notebooks_run_at_the_same_time(graph_run):
    root, results = graph_run
    # each of 00_a and 02_c waited for the other to start: one after the other, the first times out
    assert [(r.notebook, r.status) for r in results] == [("00_a", "ok"), ("01_b", "ok"), ("02_c", "ok")]
    assert marker(root, "00_a.finished") and marker(root, "02_c.finished")


def test_a_dependent_starts_after_its_need_finished(graph_run):
    root, _ = graph_run
    assert "00_a" in marker(root, "01_b.seen")  # in notebook order, 01_b would start beside 00_a
    assert marker(root, "00_a.seen") == [] and marker(root, "02_c.seen") == []


def test_summary_records_jobs_and_wall_time_in_notebook_order(graph_run):
    root, results = graph_run
    summary = json.loads((root / "reports" / "summary.json").read_text())
    assert summary["jobs"] == 2 and summary["profile"] == "graph"
    assert [n["notebook"] for n in summary["notebooks"]] == ["00_a", "01_b", "02_c"]
    assert summary["wall_seconds"] >= max(r.seconds for r in results) > 0
    assert 'href="01_b.html"' in (root / "reports" / "index.html").read_text()


def test_a_failed_need_skips_its_dependent_and_the_rest_keep_going(tmp_path, capsys):
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": ["00"], "02_c": [], "03_d": ["01"]},
                      {"00_a": {"fail": True}})
    results = run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2,
                            keep_going=True)
    assert [r.status for r in results] == ["failed", "skipped", "ok", "skipped"]
    assert "deliberate failure" in results[0].error
    assert not marker(tmp_path, "01_b.started") and not marker(tmp_path, "03_d.started")
    assert marker(tmp_path, "02_c.finished")
    out = capsys.readouterr().out
    assert "-- 01_b skipped: needs 00_a" in out and "-- 03_d skipped: needs 01_b" in out
    assert ">> 02_c started" in out and "<< 00_a failed in" in out and "since the start" in out


def test_after_a_failure_running_notebooks_finish_and_no_new_one_starts(tmp_path):
    # 01_b finishes only once summary.json shows 00_a failed, so 02_c could start only after the failure
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": [], "02_c": []},
                      {"00_a": {"fail": True, "wait_for": ["01_b.started"]}, "01_b": {"wait_failed": "00_a"}})
    results = run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2)
    assert [r.status for r in results] == ["failed", "ok", "skipped"]
    assert marker(tmp_path, "01_b.finished") and not marker(tmp_path, "02_c.started")


def test_cycles_and_unknown_needs_stop_the_run_before_anything_runs(tmp_path):
    nbs = graph_suite(tmp_path, {"00_a": ["02"], "01_b": [], "02_c": ["00"]})
    with pytest.raises(ValueError, match="cycle: 00_a needs 02_c needs 00_a"):
        run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2)
    with pytest.raises(ValueError, match="cycle: 00_a needs 02_c needs 00_a"):
        run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs)  # serial too
    set_needs(nbs / "02_c.ipynb", ["07", "01"])
    with pytest.raises(ValueError, match=r"02_c.ipynb needs \['07'\], which match no notebook.*'01_b'"):
        run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2)
    assert not list((tmp_path / "marks").iterdir()) and not list((tmp_path / "r").glob("*.ipynb"))


def test_graph_keeps_only_needs_inside_the_run(tmp_path):
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": ["00"], "02_c": ["00_a", "01"]})
    a, b, c = discover_notebooks(nbs)
    assert dependency_graph([a, b, c], nbs) == {a: [], b: [a], c: [a, b]}
    assert dependency_graph([c], nbs) == {c: []}  # run alone, 02_c relies on earlier outputs


def test_malformed_needs_name_the_notebook(tmp_path):
    path = make_notebook(tmp_path / "00_x.ipynb", PARAMS, SPEC, "")
    assert notebook_needs(path) == []
    for bad in ("00", [0], [""], None):
        set_needs(path, bad)
        with pytest.raises(ValueError, match=r"00_x.ipynb: metadata 'nbutils' must be a mapping"):
            notebook_needs(path)


def test_kernels_of_a_parallel_run_share_the_cpus_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # exported by the user: kept
    for name in MALLOC_SETTINGS:  # Dask's nanny (tests/test_parallel.py) leaves MALLOC_TRIM_THRESHOLD_ set
        monkeypatch.delenv(name, raising=False)
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": ["00"]})
    results = run_notebooks(["01"], profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2)
    assert [r.status for r in results] == ["ok"]  # its need 00_a is not in the run: taken as satisfied
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    assert marker(tmp_path, "01_b.env") == {"OMP_NUM_THREADS": expected, "MKL_NUM_THREADS": "3", **MALLOC_SETTINGS}
    assert "OMP_NUM_THREADS" not in os.environ  # the runner's own process is left alone


def test_notebook_pools_are_capped_beside_another_notebook_not_when_alone_or_set_by_the_user(tmp_path):
    many = 4 * (os.cpu_count() or 1)  # above the cap on any machine
    pair = {"01_b": {"jobs": many, "wait_for": ["02_c.started"]}, "02_c": {"jobs": many, "wait_for": ["01_b.started"]}}
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": ["00"], "02_c": ["00"]}, {"00_a": {"jobs": many}, **pair})
    results = run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, jobs=2)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    share = max(1, (os.cpu_count() or 1) // 2)
    # 00_a ran alone (everything else needs it): its profile value stands; 01_b and 02_c ran side by side
    assert [marker(tmp_path, f"{s}.jobs") for s in ("00_a", "01_b", "02_c")] == [many, share, share]
    assert [r.parameters["jobs"] for r in results] == [many, share, share]  # the summary records what ran
    for stem in ("00_a", "01_b", "02_c"):
        (tmp_path / "marks" / f"{stem}.jobs").unlink()
    run_notebooks(profile="graph", overrides={"jobs": many}, reports_dir=tmp_path / "r2", notebooks_dir=nbs, jobs=2)
    assert [marker(tmp_path, f"{s}.jobs") for s in ("00_a", "01_b", "02_c")] == [many] * 3  # the user's choice


def test_every_kernel_gets_the_malloc_settings_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")  # exported by the user: kept
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    nbs = graph_suite(tmp_path, {"00_a": []})
    assert [r.status for r in run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs)] == ["ok"]
    env = marker(tmp_path, "00_a.env")
    assert env["MALLOC_MMAP_THRESHOLD_"] == MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == "1000"
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # set for the kernel only, then removed


def test_jobs_must_be_positive(suite, tmp_path):
    for jobs in (0, -1, 1.5):
        with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
            run_notebooks(profile="tiny", reports_dir=tmp_path / "r", notebooks_dir=suite, jobs=jobs)
    assert not (tmp_path / "r").exists()


def test_serial_run_records_jobs_one(suite, tmp_path):
    reports = tmp_path / "r"
    results = run_notebooks(profile="tiny", reports_dir=reports, notebooks_dir=suite, progress=False,
                            keep_going=True, overrides={"label": "boom"})
    assert [r.status for r in results] == ["failed", "failed"]  # serial keep_going: every notebook runs
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["jobs"] == 1 and summary["wall_seconds"] >= results[0].seconds + results[1].seconds


def test_suite_notebooks_declare_needs_and_minutes_in_both_files_of_each_pair():
    import jupytext

    from nbutils.pairs import paired_text

    notebooks = discover_notebooks(REPO / "notebooks")
    declared = {nb.stem[:2]: notebook_needs(nb) for nb in notebooks}
    assert declared == {"00": [], "01": ["00"], "02": ["00"], "03": ["02"], "04": ["02"], "05": ["00"],
                        "06": ["00"], "07": ["00"]}
    for nb in notebooks:
        meta = nbformat.read(nb, as_version=4).metadata["nbutils"]
        assert jupytext.read(paired_text(nb)).metadata.get("nbutils") == meta, nb.name
        assert notebook_minutes(nb) > 0, nb.name  # the start-order hint of a first parallel run
    graph = dependency_graph(notebooks, REPO / "notebooks")
    assert [n.stem for n in graph[notebooks[4]]] == ["02_train_normative_autoencoder"]


def set_minutes(path: Path, minutes) -> Path:
    """Add the run-time hint ``nbutils.minutes`` to a notebook's metadata."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.setdefault("nbutils", {})["minutes"] = minutes
    nbformat.write(nb, path)
    return path


def test_critical_paths_add_the_longest_chain_of_dependents():
    a, b, c, d = (Path(f"0{i}_x.ipynb") for i in range(4))
    graph = {a: [], b: [a], c: [b], d: []}
    paths = critical_paths(graph, {a: 1.0, b: 2.0, c: 4.0, d: 5.0})
    assert paths == {a: 7.0, b: 6.0, c: 4.0, d: 5.0}  # a heads a 7-minute chain, so it starts before d


def test_ready_notebooks_start_longest_first_by_hint_then_by_the_last_run(tmp_path, capsys):
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": [], "02_c": []})
    set_minutes(nbs / "02_c.ipynb", 5.0)
    reports = tmp_path / "r"
    run_notebooks(profile="graph", reports_dir=reports, notebooks_dir=nbs, jobs=2)
    out = capsys.readouterr().out
    assert out.index(">> 02_c started") < out.index(">> 00_a started") < out.index(">> 01_b started")
    # The times of the previous run in the same reports folder replace the hints.
    summary = json.loads((reports / "summary.json").read_text())
    for row in summary["notebooks"]:
        row["seconds"] = {"00_a": 60.0, "01_b": 900.0, "02_c": 2.0}[row["notebook"]]  # 02_c: 5 min hint
    (reports / "summary.json").write_text(json.dumps(summary))
    run_notebooks(profile="graph", reports_dir=reports, notebooks_dir=nbs, jobs=2)
    out = capsys.readouterr().out
    assert out.index(">> 01_b started") < out.index(">> 00_a started") < out.index(">> 02_c started")


def test_malformed_minutes_name_the_notebook(tmp_path):
    path = make_notebook(tmp_path / "00_x.ipynb", PARAMS, SPEC, "")
    assert notebook_minutes(path) is None
    assert notebook_minutes(set_minutes(path, 2)) == 2.0
    for bad in (-1, "3", True):
        with pytest.raises(ValueError, match=r"00_x.ipynb: metadata 'nbutils.minutes' must be a number"):
            notebook_minutes(set_minutes(path, bad))


def test_a_serial_run_follows_needs_too(tmp_path, capsys):
    nbs = graph_suite(tmp_path, {"00_a": [], "01_b": ["00"], "02_c": [], "03_d": ["01"]}, {"00_a": {"fail": True}})
    results = run_notebooks(profile="graph", reports_dir=tmp_path / "r", notebooks_dir=nbs, keep_going=True)
    assert [r.status for r in results] == ["failed", "skipped", "ok", "skipped"]
    assert "-- 03_d skipped: needs 01_b" in capsys.readouterr().out
    # named before its need, a notebook is moved after it; results keep the order given
    (nbs / "profiles" / "graph.yaml").write_text(yaml.safe_dump({"_common": {"marks": str(tmp_path / "marks")}}))
    results = run_notebooks(["01", "00"], profile="graph", reports_dir=tmp_path / "r2", notebooks_dir=nbs)
    assert [(r.notebook, r.status) for r in results] == [("01_b", "ok"), ("00_a", "ok")]
    assert "00_a" in marker(tmp_path, "01_b.seen")
