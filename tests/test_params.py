"""Parameters declared once, in the ``parameters`` cell, and checked from that declaration."""

from typing import Literal

import pytest

from nbutils.params import (
    ParameterError,
    check_parameters,
    describe_parameters,
    parameter_spec,
    read_parameters_cell,
    spec_from_cell,
    validate_parameters,
)

CELL = '''from typing import Literal

seed: int = 1  # random seed
lr: float = 3  # learning rate
name: str = "x"
space: Literal["mni", "native"] = "mni"  # output space
sizes: list[int] = [1, 2]
limit: int | None = None  # cap; None for none
verbose: bool = False
'''
ANNOTATIONS = {"seed": int, "lr": float, "name": str, "space": Literal["mni", "native"],
               "sizes": list[int], "limit": int | None, "verbose": bool}
GOOD = dict(seed=1, lr=3, name="x", space="mni", sizes=[1, 2], limit=None, verbose=False)


def namespace(**values):
    """A notebook namespace after the parameters cell: annotations plus values."""
    return {"__annotations__": dict(ANNOTATIONS), **GOOD, **values}


def test_good_parameters_become_a_typed_frozen_instance():
    p = validate_parameters(namespace())
    assert (p.seed, p.lr, p.space, p.sizes, p.limit) == (1, 3.0, "mni", [1, 2], None)
    assert isinstance(p.lr, float)
    with pytest.raises(AttributeError):
        p.seed = 2  # frozen


def test_the_kernel_reads_the_declaration_itself():
    ns: dict = {}
    exec(CELL, ns)  # what running the parameters cell leaves behind (module scope)
    ns["seed"] = 7  # papermill's injected override
    assert validate_parameters(ns).seed == 7


def test_private_and_nonparameter_names_are_ignored():
    ns = namespace(_hidden=1, In=[], np=pytest, frame=object(), Literal=Literal)
    assert validate_parameters(ns).seed == 1


def test_unknown_name_is_reported_with_allowed_list():
    with pytest.raises(ParameterError) as err:
        validate_parameters(namespace(sede=3))
    msg = str(err.value)
    assert "unknown parameter(s): sede" in msg
    assert "seed: int" in msg and "space: 'mni' | 'native'" in msg


@pytest.mark.parametrize(
    ("name", "value"),
    [("seed", "1"), ("seed", True), ("seed", 1.5), ("lr", "fast"), ("space", "t1"),
     ("sizes", [1, "a"]), ("sizes", 3), ("verbose", 1), ("limit", 2.5)],
)
def test_wrong_types_are_rejected(name, value):
    with pytest.raises(ParameterError, match=f"parameter '{name}' must be"):
        validate_parameters(namespace(**{name: value}))


def test_missing_parameter_is_reported():
    ns = namespace()
    del ns["lr"]
    with pytest.raises(ParameterError, match="missing parameter: lr"):
        validate_parameters(ns)


def test_all_problems_reported_at_once():
    with pytest.raises(ParameterError) as err:
        validate_parameters(namespace(seed="a", extra=1))
    assert "unknown parameter(s): extra" in str(err.value)
    assert "parameter 'seed' must be int" in str(err.value)


def test_a_cell_without_typed_declarations_is_refused():
    with pytest.raises(ParameterError, match="declares no typed parameters"):
        validate_parameters({"seed": 1})


def test_describe_lists_every_field():
    text = describe_parameters(parameter_spec(ANNOTATIONS))
    assert len(text.splitlines()) == 7
    assert "limit: int | None" in text


def test_reading_the_cell_without_a_kernel():
    declared = read_parameters_cell(CELL)
    assert list(declared) == list(ANNOTATIONS)
    assert declared["space"].annotation == "Literal['mni', 'native']"
    assert declared["lr"].default == 3 and declared["lr"].help == "learning rate"
    assert declared["name"].help == ""
    spec = spec_from_cell(CELL)
    assert describe_parameters(spec) == describe_parameters(parameter_spec(ANNOTATIONS))


@pytest.mark.parametrize("line", ["seed = 1", "seed: int = len('ab')", "print(1)"])
def test_untyped_or_computed_declarations_are_refused(line):
    with pytest.raises(ParameterError, match="line 1"):
        read_parameters_cell(line, where="nb.ipynb")


def test_profiles_are_checked_without_requiring_every_parameter():
    spec = spec_from_cell(CELL)
    assert check_parameters(spec, {"lr": 1}, require_all=False) == {"lr": 1.0}
    with pytest.raises(ParameterError, match="parameter 'space' must be"):
        check_parameters(spec, {"space": "talairach"}, require_all=False)


GROUP_CELL = '''from nbutils.classify.settings import ClassifierSettings

seed: int = 0
classifier: ClassifierSettings = {}  # overrides of its defaults
'''


def test_a_settings_group_is_declared_once_and_checked_field_by_field():
    from nbutils.classify.settings import ClassifierSettings

    spec = spec_from_cell(GROUP_CELL)  # the cell's import makes the annotation readable
    got = check_parameters(spec, {"classifier": {"lr": 1, "n_folds": 4}}, require_all=False)
    assert got["classifier"] == ClassifierSettings(lr=1.0, n_folds=4)
    ns: dict = {}
    exec(GROUP_CELL, ns)
    assert validate_parameters(ns).classifier == ClassifierSettings()
    with pytest.raises(ParameterError, match=r"parameter 'classifier' \(ClassifierSettings\).*'n_folds' must be int"):
        check_parameters(spec, {"classifier": {"n_folds": "4"}}, require_all=False)
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\): nfolds"):
        check_parameters(spec, {"classifier": {"nfolds": 4}}, require_all=False)
