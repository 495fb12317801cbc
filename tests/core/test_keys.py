"""A step metric's key: made by ``step_key``, read back by ``parse_step_key``, and nothing else reads or writes one."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

from recursive_ae_gan.core.keys import StepKey, parse_step_key, step_key, steps_with


@pytest.mark.parametrize(
    ("split", "step", "name"), [("test", 0, "mse"), ("val", 12, "d_balanced_acc"), ("train", 3, "rec_loss")]
)
def test_round_trip(split: str, step: int, name: str) -> None:
    key = step_key(split, step, name)
    assert key == f"{split}/step_{step}/{name}"  # the format metrics.json and old runs hold
    assert parse_step_key(key) == StepKey(split, step, name)
    assert step_key(*parse_step_key(key)) == key


@pytest.mark.parametrize(
    "key",
    ["test/d_real_acc", "score", "", "test/step_/mse", "test/step_x/mse", "test/step_-1/mse", "test/step_01/mse",
     "test/step_0/", "/step_0/mse", "a/test/step_0/mse", "test/step_0/mse/extra", "test/step_0"],
)  # fmt: skip
def test_other_keys_are_not_step_keys(key: str) -> None:
    assert parse_step_key(key) is None


@pytest.mark.parametrize(("split", "step", "name"), [("test", -1, "mse"), ("", 0, "mse"), ("test", 0, ""),
                                                     ("a/b", 0, "mse"), ("test", 0, "judge/acc")])  # fmt: skip
def test_no_key_that_would_not_read_back(split: str, step: int, name: str) -> None:
    with pytest.raises(ValueError, match="no step key"):
        step_key(split, step, name)


def test_steps_with() -> None:
    keys = ["test/step_2/mse", "test/step_0/mse", "test/step_10/mse", "val/step_5/mse", "test/step_1/bce", "score"]
    assert steps_with(keys, "test", "mse") == [0, 2, 10]  # numeric order, one split and metric only
    assert steps_with(keys, "test", "ssim") == []


def test_the_format_is_spelled_once() -> None:
    """No other module of the package spells ``split/step_i/name`` or parses it by hand (docstrings may show one)."""
    by_hand = re.compile(r"step_(\{|\(|[0-9]+/)")  # f"{split}/step_{i}/...", re"step_(\d+)", "test/step_0/..."
    package = REPO / "recursive_ae_gan"
    found = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if path.name != "keys.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line) and "``" not in line
    ]
    assert found == []
