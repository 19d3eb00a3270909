"""Every notebook: committed clean, shaped like a tutorial, and runs end to end (smoke profile)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from nbutils.runner import discover_notebooks, load_profile

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
    for name in ("reports_dir", "data_dir", "seed"):
        assert re.search(rf"^{name}\s*=", tagged[0].source, re.M), f"{nb_path.name}: no '{name}' parameter"
    assert "validate_parameters(" in code[1].source, "the cell after 'parameters' must validate them"


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
@pytest.mark.parametrize("stem", IDS)
def test_notebook_runs_with_smoke_profile(smoke_run, stem):
    result = smoke_run.results[stem]
    assert result.status == "ok", f"{stem} failed: {result.error} (see {result.executed})"
    metrics = json.loads(Path(result.metrics_file).read_text())
    assert metrics["data_source"], "metrics must say which data they came from"
    assert Path(result.html).is_file()
