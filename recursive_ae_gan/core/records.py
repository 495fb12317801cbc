"""Reading back what runs leave behind (``metrics.json``, ``eval.json``, Hydra's ``.hydra/*.yaml``): a file that is
cut short, not text, or not the kind of document it should be is one line naming it (``Damaged``), so that a
command reading many runs can leave the damaged one out and go on with the rest.

The project's own writes are atomic (``core.atomic``), but a disk error, a sync tool, a copy cut short or a hand
edit still leave such files; Hydra writes ``.hydra/`` in place. A missing file is not damage: ``FileNotFoundError``
passes through, and each caller says what a missing file means (a run not finished, not evaluated).
Only the standard library and OmegaConf here: ``report`` imports this module without torch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recursive_ae_gan.core.errors import UserError, first_line

# The groups every run's .hydra/config.yaml holds (conf/train.yaml), ``paths`` written last: one cut short lacks some.
RUN_CONFIG_KEYS = ("model", "data", "trainer", "paths")


class Damaged(UserError):
    """A file a run left behind is truncated or not what it should be."""


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as err:
        raise Damaged(f"{path} is damaged (not text: byte {err.start} is {err.object[err.start]:#04x})") from None
    except OSError as err:  # permissions, a disk error
        raise Damaged(f"{path} cannot be read ({err.strerror or err})") from None


def _not_yaml(path: Path, err: Exception) -> Damaged:
    why = first_line(err)
    if isinstance(err, yaml.MarkedYAMLError) and err.problem and err.problem_mark:
        why = f"{err.problem} at line {err.problem_mark.line + 1}"  # where the parser stopped: often the cut
    return Damaged(f"{path} is damaged (not YAML: {why}; cut short?)")


def read_json(path: Path) -> dict:
    """The JSON object in ``path``."""
    text = _text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        why = f"not JSON: {err}" if text.strip() else "empty"
        raise Damaged(f"{path} is damaged ({why}; cut short?)") from None
    if not isinstance(value, dict):
        raise Damaged(f"{path} is damaged (a JSON {type(value).__name__}, not an object)")
    return value


def read_yaml(path: Path) -> object:
    """The YAML document in ``path``, as plain data (the files the project writes with ``yaml.safe_dump``)."""
    text = _text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _not_yaml(path, err) from None


def read_config(path: Path, required: Sequence[str] = ()) -> DictConfig | ListConfig:
    """The config Hydra saved in ``path`` (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``): a mapping
    holding every dotted key of ``required``, or a list when none is required (``overrides.yaml``)."""
    text = _text(path)
    try:
        config = OmegaConf.load(io.StringIO(text))
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as err:
        raise _not_yaml(path, err) from None
    kind = DictConfig if required else ListConfig
    if not isinstance(config, kind):
        raise Damaged(f"{path} is damaged (not a {'mapping' if required else 'list'}; cut short?)")
    missing = [key for key in required if not _holds(config, key)]
    if missing:
        raise Damaged(f"{path} is damaged (no {', '.join(missing)}; cut short?)")
    return config


def _holds(config: DictConfig, key: str) -> bool:
    """Whether ``config`` has the dotted ``key``, without resolving anything (``${hydra:...}`` cannot be here)."""
    node = OmegaConf.to_container(config, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
