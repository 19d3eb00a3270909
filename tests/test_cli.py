import pytest

from nbutils.cli import build_parser, main


def test_every_command_is_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"run", "synth", "prep", "report"} <= set(sub.choices)


def test_unknown_profile_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        main(["run", "--profile", "nope", "--reports", str(tmp_path)])
