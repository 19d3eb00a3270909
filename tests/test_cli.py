import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbutils.cli import build_parser, main

COMMANDS = {"run", "synth", "prep", "report", "train"}


def test_every_command_is_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert COMMANDS <= set(sub.choices)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name} " in out or f"    {name}\n" in out, name


def test_train_subcommand_and_module_share_one_parser():
    from nbutils.normative.train import _parser, run

    args = build_parser().parse_args(["train", "--table", "t.tsv", "--out", "o", "--devices", "2"])
    assert args.func is run and args.devices == "2" and args.max_epochs == 50
    standalone = _parser().parse_args(["--table", "t.tsv", "--out", "o", "--devices", "2"])
    assert vars(standalone) == {k: v for k, v in vars(args).items() if k != "command"}


def test_train_module_help_still_works():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "nbutils.normative.train", "--help"],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: python -m nbutils.normative.train")
    assert "--strategy" in proc.stdout and "--table" in proc.stdout


def test_unknown_profile_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        main(["run", "--profile", "nope", "--reports", str(tmp_path)])


def test_run_passes_jobs_through(monkeypatch, tmp_path, capsys):
    import nbutils.runner

    seen = {}

    def fake_run_notebooks(notebooks, **kwargs):
        seen.update(kwargs, notebooks=notebooks)
        return []

    monkeypatch.setattr(nbutils.runner, "run_notebooks", fake_run_notebooks)
    assert main(["run", "03", "--jobs", "3", "--reports", str(tmp_path)]) == 0
    assert seen["jobs"] == 3 and seen["notebooks"] == ["03"]
    assert main(["run", "--reports", str(tmp_path)]) == 0
    assert seen["jobs"] == 1  # default: one after the other
    with pytest.raises(SystemExit) as exc:
        main(["run", "--jobs", "0"])
    assert exc.value.code == 2 and "--jobs: must be >= 1" in capsys.readouterr().err


def test_run_help_explains_the_dependency_graph(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "dependency graph" in out and "nbutils.needs" in out and "--jobs N" in out


def test_run_reports_a_cycle_without_running(tmp_path, capsys):
    import nbformat

    from conftest import make_notebook

    nbs = tmp_path / "notebooks"
    for stem, need in (("00_a", "01"), ("01_b", "00")):
        path = make_notebook(nbs / f"{stem}.ipynb", 'reports_dir: str = "../reports"\n', "", "")
        nb = nbformat.read(path, as_version=4)
        nb.metadata["nbutils"] = {"needs": [need]}
        nbformat.write(nb, path)
    (nbs / "profiles").mkdir()
    (nbs / "profiles" / "p.yaml").write_text("_common: {}\n")
    code = main(["run", "--profile", "p", "--notebooks-dir", str(nbs), "--reports", str(tmp_path / "r"),
                 "--jobs", "2"])
    assert code == 2
    assert "nothing was run: the notebooks' needs form a cycle: 00_a needs 01_b needs 00_a" in capsys.readouterr().out
