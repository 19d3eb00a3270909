"""Every notebook: committed clean, shaped like a tutorial, and runs end to end (smoke profile)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from nbutils.pairs import pair_difference, paired_text
from nbutils.params import read_parameters_cell
from nbutils.runner import discover_notebooks, load_profile, notebook_parameters

NOTEBOOKS = discover_notebooks(REPO / "notebooks")
IDS = [nb.stem for nb in NOTEBOOKS]


def _cells(nb_path: Path):
    return nbformat.read(nb_path, as_version=4).cells


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(nb_path):
    dirty = [i for i, c in enumerate(_cells(nb_path))
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{nb_path.name}: cells {dirty} have outputs; executed copies belong in reports/"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_one_parameters_cell_validated_next(nb_path):
    cells = _cells(nb_path)
    code = [c for c in cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{nb_path.name}: {len(tagged)} cells tagged 'parameters'"
    assert code[0] is tagged[0], "the parameters cell must be the first code cell"
    declared = read_parameters_cell(tagged[0].source, where=nb_path.name)  # every line typed
    for name in ("reports_dir", "data_dir", "seed"):
        assert name in declared, f"{nb_path.name}: no '{name}' parameter"
    assert "validate_parameters(globals())" in code[1].source, "the cell after 'parameters' must validate them"
    assert "class Params" not in code[1].source, "parameters are declared once, in the parameters cell"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_prints_package_versions_near_the_top(nb_path):
    code = [c for c in _cells(nb_path) if c.cell_type == "code"]
    assert any("print_config()" in c.source for c in code[:3]), f"{nb_path.name}: no print_config() at the top"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_jupytext_pair_in_sync(nb_path):
    assert paired_text(nb_path).is_file(), f"{nb_path.name}: no paired .py source"
    problem = pair_difference(nb_path)
    assert problem is None, problem


def test_sync_check_names_the_notebook_and_cell_of_an_edit(tmp_path):
    import shutil

    nb = NOTEBOOKS[2]
    shutil.copy(nb, tmp_path / nb.name)
    text = paired_text(nb).read_text()
    assert "P = validate_parameters(globals())" in text
    (tmp_path / paired_text(nb).name).write_text(
        text.replace("P = validate_parameters(globals())", "P = validate_parameters(globals())  # edited", 1))
    problem = pair_difference(tmp_path / nb.name)
    code_cells = [i for i, c in enumerate(_cells(nb)) if c.cell_type == "code"]
    assert problem is not None and problem.startswith(f"{nb.name}: cell {code_cells[1]} (code,")
    shutil.copy(paired_text(nb), tmp_path / paired_text(nb).name)  # restored: in sync again
    assert pair_difference(tmp_path / nb.name) is None
    (tmp_path / paired_text(nb).name).write_text(text.replace('# %% tags=["parameters"]', "# %%", 1))
    assert "differs in tags" in pair_difference(tmp_path / nb.name)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_profiles_only_override_declared_values(nb_path):
    declared = notebook_parameters(nb_path)
    for profile in ("smoke", "quick", "full", "real"):
        own = load_profile(profile, REPO / "notebooks").get(nb_path.stem, {})
        assert set(own) <= set(declared), f"{profile}.yaml names undeclared {set(own) - set(declared)}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_opens_with_the_suite_kernel(nb_path):
    spec = nbformat.read(nb_path, as_version=4).metadata.get("kernelspec", {})
    assert spec.get("name") == "nbutils", f"{nb_path.name}: kernelspec should be the 'nbutils' kernel"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_teaching_structure(nb_path):
    cells = _cells(nb_path)
    first = cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), "needs a title"
    intro = first.source.lower()
    for needle in ("learning objectives", "prerequisite", "quick"):
        assert needle in intro, f"{nb_path.name}: opening cell lacks '{needle}'"
    assert "|" in first.source, f"{nb_path.name}: prerequisites should be a table"
    markdown = "\n".join(c.source.lower() for c in cells if c.cell_type == "markdown")
    for needle in ("summary", "what to read next", "references", "<details>"):
        assert needle in markdown, f"{nb_path.name}: no '{needle}' section"
    assert "write_metrics(" in "\n".join(c.source for c in cells), "must write its metrics JSON"


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_profiles_name_only_known_notebooks(profile):
    prof = load_profile(profile, REPO / "notebooks")
    assert set(prof) - {"_common"} <= {nb.stem for nb in NOTEBOOKS} | set(
        p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")
    )


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the first one pays for the whole smoke run (~6 min here)
@pytest.mark.parametrize("stem", IDS)
def test_notebook_runs_with_smoke_profile(smoke_run, stem):
    result = smoke_run.results[stem]
    assert result.status == "ok", f"{stem} failed: {result.error} (see {result.executed})"
    metrics = json.loads(Path(result.metrics_file).read_text())
    assert metrics["data_source"], "metrics must say which data they came from"
    assert Path(result.html).is_file()
