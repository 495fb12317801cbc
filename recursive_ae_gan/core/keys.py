"""A recursion step's metric key, ``split/step_i/name`` (``test/step_0/mse``): made and read back only here.

The modules log under these keys, metrics.json and eval.json store them, ``evaluate``, ``report`` and the plots
read them back; so the format is this module's alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

_STEP_KEY = re.compile(r"([^/]+)/step_(0|[1-9]\d*)/([^/]+)")  # no leading zeros: one key per step


class StepKey(NamedTuple):
    """A step key's parts: ``step_key(*parsed)`` is the key again."""

    split: str
    step: int
    name: str


def step_key(split: str, step: int, name: str) -> str:
    """The key of metric ``name`` of recursion step ``step`` on ``split`` (``train``, ``val``, ``test``)."""
    if step < 0 or not split or not name or "/" in split + name:
        raise ValueError(f"no step key for split={split!r}, step={step}, name={name!r}")
    return f"{split}/step_{step}/{name}"


def parse_step_key(key: str) -> StepKey | None:
    """The parts of a step key; None for any other key (``test/d_real_acc``, ``score``)."""
    match = _STEP_KEY.fullmatch(key)
    return StepKey(match[1], int(match[2]), match[3]) if match else None


def steps_with(keys: Iterable[str], split: str, name: str) -> list[int]:
    """The steps, in order, whose key of metric ``name`` on ``split`` is among ``keys``."""
    return sorted({key.step for key in map(parse_step_key, keys) if key and (key.split, key.name) == (split, name)})
