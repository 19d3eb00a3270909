"""The papermill runner on tiny notebooks (real kernel, real papermill)."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_notebook
from nbutils.cli import main
from nbutils.runner import load_profile, parse_override, resolve_parameters, run_notebooks

PARAMS = 'reports_dir = "../reports"\nfactor = 2\nlabel = "a"\n'
SPEC = (
    "from dataclasses import dataclass\n"
    "from nbutils.params import validate_parameters\n"
    "@dataclass(frozen=True)\n"
    "class Params:\n"
    "    reports_dir: str\n"
    "    factor: int\n"
    "    label: str\n"
    "P = validate_parameters(Params, globals())\n"
)
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


def test_bad_parameter_fails_with_clear_message(suite, tmp_path, capsys):
    nb = suite / "00_first.ipynb"
    code = main(["run", str(nb), "--profile", str(suite / "profiles" / "tiny.yaml"),
                 "--reports", str(tmp_path / "r"), "-p", "factor", "two", "--no-progress"])
    assert code == 1
    out = capsys.readouterr().out
    assert "ParameterError" in out and "parameter 'factor' must be int" in out
    assert "FAILED: 00_first" in out


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
