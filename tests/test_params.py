from dataclasses import dataclass
from typing import Literal

import pytest

from nbutils.params import ParameterError, describe_parameters, validate_parameters


@dataclass(frozen=True)
class Spec:
    seed: int
    lr: float
    name: str
    space: Literal["mni", "native"]
    sizes: list[int]
    limit: int | None
    verbose: bool


GOOD = dict(seed=1, lr=3, name="x", space="mni", sizes=[1, 2], limit=None, verbose=False)


def test_good_parameters_become_typed_instance():
    p = validate_parameters(Spec, dict(GOOD))
    assert p == Spec(seed=1, lr=3.0, name="x", space="mni", sizes=[1, 2], limit=None, verbose=False)
    assert isinstance(p.lr, float)


def test_private_and_nonparameter_names_are_ignored():
    ns = dict(GOOD, _hidden=1, In=[], np=pytest, frame=object())
    assert validate_parameters(Spec, ns).seed == 1


def test_unknown_name_is_reported_with_allowed_list():
    with pytest.raises(ParameterError) as err:
        validate_parameters(Spec, dict(GOOD, sede=3))
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
        validate_parameters(Spec, dict(GOOD, **{name: value}))


def test_missing_parameter_is_reported():
    ns = dict(GOOD)
    del ns["lr"]
    with pytest.raises(ParameterError, match="missing parameter: lr"):
        validate_parameters(Spec, ns)


def test_all_problems_reported_at_once():
    with pytest.raises(ParameterError) as err:
        validate_parameters(Spec, dict(GOOD, seed="a", extra=1))
    assert "unknown parameter(s): extra" in str(err.value)
    assert "parameter 'seed' must be int" in str(err.value)


def test_describe_lists_every_field():
    text = describe_parameters(Spec)
    assert len(text.splitlines()) == 7
    assert "limit: int | None" in text
