"""The papermill runner on tiny notebooks (real kernel, real papermill)."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_notebook
from nbutils.cli import main
from nbutils.params import ParameterError
from nbutils.runner import (
    load_profile,
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
