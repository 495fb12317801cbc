"""Every command shown in README.md and docs/*.md composes, to what its words say.

Each ``python -m recursive_ae_gan.<entry> ...`` and ``make train|bench|reproduce|study ARGS=...`` line of a code block
(continuation lines joined, comments dropped, the block's shell variables expanded, a ``-m`` sweep at its first
values) is composed with Hydra's compose API, and then:

* every group choice it names is the one composed (``trainer=ddp trainer=gpu`` would lose the DDP choice),
  and gives what that choice stands for (``model=rae_gan``: the adversarial model of depth 2; ``trainer=gpu``:
  the GPU accelerator; ``trainer=ddp`` or ``trainer/strategy=ddp``: the DDP strategy), unless the command
  sets that key itself;
* every key it sets has the value it gives (``trainer.devices=4`` gives 4);
* a training config passes the config check (``config.check``), a bench config the bench's (``bench.plan``).

A data config the docs show as a file to save (``conf/data/<name>.yaml``, with the data module's ``_target_``)
is saved to a folder of its own, passed with ``hydra.searchpath``.
"""

from __future__ import annotations

import re
import shlex
from enum import Enum
from pathlib import Path

import pytest
from helpers import CONF_DIR, DOCS, REPO, code_blocks, data_configs
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

import recursive_ae_gan.run.train  # noqa: F401  (registers the resolvers the launcher configs use)
from recursive_ae_gan.perf.bench import plan
from recursive_ae_gan.run.config import check

ENTRY_CONFIGS = {"train": "train", "evaluate": "evaluate", "reconstruct": "reconstruct", "bench": "bench"}
MAKEFILE = (REPO / "Makefile").read_text()
EXPERIMENTS = re.search(r"^EXPERIMENTS \?= (\S+)", MAKEFILE, re.M).group(1)
STUDY = re.search(r"^STUDY \?= (\S+)", MAKEFILE, re.M).group(1)  # make study [STUDY=study_cifar10]
MAKE_TARGETS = {
    "train": ("train", []),
    "bench": ("bench", []),
    "reproduce": ("train", ["-m", f"experiment={EXPERIMENTS}"]),
    "study": ("train", ["-m", f"experiment={STUDY}"]),
}
GAME, AE = "recursive_ae_gan.models.AdversarialAutoencoder", "recursive_ae_gan.models.RecursiveAutoencoder"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"

# What a group choice stands for: {key: value} it must compose to, where the command does not set the key.
MEANS: dict[tuple[str, str], dict[str, object]] = {
    ("model", "ae"): {"model._target_": AE, "model.recursion_depth": 0},
    ("model", "rae"): {"model._target_": AE, "model.recursion_depth": 2},
    ("model", "ae_gan"): {"model._target_": GAME, "model.recursion_depth": 0},
    ("model", "rae_gan"): {"model._target_": GAME, "model.recursion_depth": 2},
    ("data", "mnist"): {"data.dataset": "torchvision.datasets.MNIST"},
    ("data", "cifar10"): {"data.dataset": "torchvision.datasets.CIFAR10"},
    ("data", "folder"): {"data.dataset": "folder"},
    ("trainer", "cpu"): {"trainer.accelerator": "cpu"},
    ("trainer", "gpu"): {"trainer.accelerator": "gpu", "trainer.precision": "bf16-mixed"},
    ("trainer", "ddp"): {"trainer.strategy": "ddp"},
    ("trainer/strategy", "ddp"): {"trainer.strategy": "ddp"},
    ("hydra/launcher", "gpus"): {
        "hydra.launcher._target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    },
    ("hparams_search", "ae_optuna"): {"hydra.mode": "MULTIRUN", "optimized_metric": "val/loss"},
    ("hparams_search", "ae_gan_optuna"): {"hydra.mode": "MULTIRUN", "model._target_": GAME},
}
PARSER = OverridesParser.create()


def commands(block: str) -> list[tuple[str, list[str]]]:
    """``(entry, arguments)`` of every command of one block, with its shell variables expanded."""
    found, variables = [], {}
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and re.fullmatch(r"\w+=.*", words[0]):  # D=... : a shell variable of the block
            name, _, value = words[0].partition("=")
            variables[name] = value
            continue
        words = shlex.split(re.sub(r"\$(\w+)", lambda m: variables.get(m[1], m[0]), line), comments=True)
        words = words[1:] if words[:1] == ["time"] else words
        if words[:2] == ["python", "-m"] and words[2].startswith("recursive_ae_gan."):
            entry = words[2].removeprefix("recursive_ae_gan.")
            if entry in ENTRY_CONFIGS:
                found.append((entry, [w for w in words[3:] if w != "..."]))
        elif words[:1] == ["make"] and len(words) > 1 and words[1] in MAKE_TARGETS:
            entry, fixed = MAKE_TARGETS[words[1]]
            study = [w.removeprefix("STUDY=") for w in words[2:] if w.startswith("STUDY=")]  # make study STUDY=...
            fixed = ["-m", f"experiment={study[-1]}"] if study else fixed
            args = [w.removeprefix("ARGS=") for w in words[2:] if w.startswith("ARGS=")]
            extra = [w for a in args for w in shlex.split(a) if w != "..."]
            found.append((entry, [*fixed, *extra]))
    return found


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, entry, arguments)`` of every command, once (the README and a guide may show the same one)."""
    found: dict[tuple[str, tuple[str, ...]], str] = {}
    for path in DOCS:
        for _, block in code_blocks(path):
            for entry, args in commands(block):
                found.setdefault((entry, tuple(args)), f"{path.name}: {entry} {' '.join(args)}")
    return [(where, entry, list(args)) for (entry, args), where in found.items()]


def first_point(args: list[str]) -> list[str]:
    """The overrides of the first job of ``args`` (a ``-m`` sweep: every swept key at its first value, an
    interval at its lower end)."""
    point = []
    for text in (a for a in args if a not in ("-m", "--multirun")):
        (override,) = PARSER.parse_overrides([text])
        if override.is_interval_sweep():  # an Optuna search's interval: its lower end
            text = f"{override.get_key_element()}={override.value().start}"
        elif override.is_sweep_override():
            text = f"{override.get_key_element()}={next(override.sweep_string_iterator())}"
        point.append(text)
    return point


def plain(value: object) -> object:
    """A config value as the override parser gives it: containers as Python objects, enums by name."""
    value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
    return value.name if isinstance(value, Enum) else value


def assert_says_what_it_does(cfg: DictConfig, overrides: list[str]) -> None:
    parsed = PARSER.parse_overrides(overrides)
    chosen = cfg.hydra.runtime.choices
    set_keys = {o.key_or_group for o in parsed}
    for override in parsed:
        key, value = override.key_or_group, override.value()
        if override.is_delete() or override.is_add() or override.is_force_add():
            continue
        if isinstance(value, list) and Path(CONF_DIR, key).is_dir():  # several configs of a group: composed
            continue
        if key in chosen:  # a group choice: the one composed, and what it stands for
            assert chosen[key] == value, f"{key}={value} is replaced by {key}={chosen[key]}"
            for name, expected in MEANS.get((key, value), {}).items():
                if name not in set_keys and not (name == "model.recursion_depth" and chosen.get("experiment")):
                    assert plain(OmegaConf.select(cfg, name)) == expected, f"{key}={value}: {name}"
        elif key != "hydra.searchpath":
            assert plain(OmegaConf.select(cfg, key, throw_on_missing=True)) == plain(value), key


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def user_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data config files the docs tell users to write, in a searchpath folder of their own."""
    folder = tmp_path_factory.mktemp("my_configs")
    (folder / "data").mkdir()
    for name, text in data_configs().items():
        (folder / "data" / f"{name}.yaml").write_text(text)
    return folder


def test_the_docs_show_commands_and_their_data_configs() -> None:
    entries = {entry for _, entry, _ in COMMANDS}
    assert {"train", "evaluate"} <= entries
    assert "fashion" in data_configs()


@pytest.mark.parametrize(("entry", "args"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_a_documented_command_composes_to_what_it_says(user_configs: Path, entry: str, args: list[str]) -> None:
    overrides = [o for o in first_point(args) if not o.startswith("hydra.searchpath=")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            ENTRY_CONFIGS[entry], [*overrides, f"hydra.searchpath=[file://{user_configs}]"], return_hydra_config=True
        )
    assert_says_what_it_does(cfg, overrides)
    if entry == "train":
        with open_dict(cfg):
            del cfg.hydra  # the job's config, as the task sees it
            cfg.paths.output_dir = "outputs/runs/X"  # Hydra's run directory, at run time
        check(cfg)
    if entry == "bench":
        plan(cfg.bench)  # the settings the bench checks before it measures
