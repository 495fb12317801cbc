"""What a run tells its console and loggers: its config tree, a name saying what it is, its tags, its
hyperparameters and final score.

- ``${run_name:}`` (a resolver, registered on import) names a run by its overrides that change what it trains
  (``run.identity``): in a sweep, the swept ones (``model=rae,seed=1``); a single run, all (``defaults`` if none).
  ``${run_name:timed}`` puts the run directory's time stamp (and a sweep's job number) first, for loggers that
  list runs flat (MLflow, W&B). Names are filesystem-safe and at most ``MAX_NAME`` characters.
- :func:`print_config_tree`, :func:`check_installed`, :func:`record_tags`, :func:`record_result` and
  :func:`log_image` speak to every logger in its own client's terms.
- ``TensorBoardFiles`` and ``CSVFiles`` (``conf/logger/``) are Lightning's loggers whose writes, refused by the
  filesystem, name their file: the ``OSError`` of a write to an open file carries no name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rich.console
import rich.syntax
import rich.tree
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from recursive_ae_gan.core.atomic import atomic_open
from recursive_ae_gan.core.errors import UserError, refused_write
from recursive_ae_gan.run.identity import ignored

MAX_NAME = 120
# A logger's target -> (the module its client needs, the project's extra that installs it).
CLIENTS = {
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "lightning.pytorch.loggers.mlflow.MLFlowLogger": ("mlflow", "mlflow"),
    "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb"),
    "lightning.pytorch.loggers.wandb.WandbLogger": ("wandb", "wandb"),
}


def safe_name(text: str) -> str:
    """``text`` as one path component: unsafe characters become ``_``; a long name keeps a hash of the whole."""
    name = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


def swept_keys(hydra_cfg: DictConfig) -> set[str]:
    """The keys a multirun varies: the sweeper's ``params`` (Optuna's search space, or the basic sweeper's) and
    the command line's sweep overrides (``model=ae,rae``), which the basic sweeper saves in ``multirun.yaml``."""
    keys = set((OmegaConf.select(hydra_cfg, "sweeper.params") or {}).keys())
    saved = Path(hydra_cfg.sweep.dir, "multirun.yaml")
    if saved.is_file():
        command_line = OmegaConf.load(saved).hydra.overrides.task
        keys |= {o.key_or_group for o in OverridesParser.create().parse_overrides(list(command_line))
                 if o.is_sweep_override()}  # fmt: skip
    return keys


def run_name(style: str = "") -> str | None:
    """The ``run_name`` resolver: see the module docstring. Outside a Hydra run (the compose API), no name:
    ``""`` (TensorBoard then writes into ``tensorboard/`` itself), or None for ``timed`` (the logger's own)."""
    if not HydraConfig.initialized():
        return None if style == "timed" else ""
    hydra_cfg = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    overrides = [o for o in overrides if not ignored(o.key_or_group)]  # where it reads, how it logs, ...
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if sweep and (keys := swept_keys(hydra_cfg)):
        overrides = [o for o in overrides if o.key_or_group in keys]
    name = safe_name(",".join(o.input_line for o in overrides)) if overrides else "defaults"
    if style != "timed":
        return name
    stamp = f"{Path(hydra_cfg.sweep.dir).name}/{hydra_cfg.job.num}" if sweep else Path(hydra_cfg.run.dir).name
    return f"{stamp} {name}"


OmegaConf.register_new_resolver("run_name", run_name, replace=True)

# The groups first, in the order a reader looks for them; the top-level keys after.
TREE_ORDER = ("data", "model", "trainer", "callbacks", "logger", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig, path: Path) -> None:
    """Print the composed, resolved config as a tree (as lightning-hydra-template's ``extras.print_config``)
    and save the same text to ``path`` (``config_tree.log`` in the run directory)."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    rest = {k: v for k, v in cfg.items() if k not in TREE_ORDER}
    width = 80
    for key in [k for k in TREE_ORDER if k in cfg] + ([""] if rest else []):
        value = cfg[key] if key else OmegaConf.create(rest)
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        width = max(width, 16 + max(map(len, text.splitlines()), default=0))  # rich crops lines at its width
        tree.add(key or "(top level)", style="bold").add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.console.Console(width=width).print(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as file:
        rich.console.Console(file=file, width=width).print(tree)


def check_installed(logger_cfg: Mapping[str, Any] | None) -> None:
    """A one-line error for a chosen logger whose client package is not installed."""
    for key, node in (logger_cfg or {}).items():
        module, extra = CLIENTS.get(node.get("_target_"), (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise UserError(
                f"logger.{key} needs the {module} package: pip install -e '.[{extra}]' (or pip install {module})"
            )


def record_tags(loggers: Sequence[Logger], tags: Sequence[str]) -> None:
    """Give the run's tags to every logger at its start, so that a run that fails is found by them too."""
    if not tags:
        return
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("tags", ", ".join(tags))
        elif isinstance(logger, MLFlowLogger):  # one tag per label; keys take only [\w .\-/]
            for tag in tags:
                logger.experiment.set_tag(logger.run_id, re.sub(r"[^\w .\-/]", "_", tag), "true")
        elif isinstance(logger, WandbLogger):
            logger.experiment.tags = tuple(dict.fromkeys([*logger.experiment.tags, *tags]))


def record_result(loggers: Sequence[Logger], params: Mapping[str, Any], tags: Sequence[str], score: float) -> None:
    """The run's hyperparameters (and tags) against its final test score, in every logger: the last thing a run
    logs, so W&B's run is finished here (only then is its offline history complete on disk).

    TensorBoard's HParams tab needs the score as ``hp_metric`` in the same call; the others log it as ``score``.
    """
    params = {**params, "tags": ",".join(tags)}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={"hp_metric": score})
        else:
            logger.log_hyperparams(params)
            logger.log_metrics({"score": score})
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def log_image(loggers: Sequence[Logger], key: str, image: torch.Tensor, epoch: int, global_step: int) -> None:
    """Log a ``(C, H, W)`` image in [0, 1] to every logger that takes images (TensorBoard, MLflow, W&B)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=epoch)
            continue
        if not isinstance(logger, MLFlowLogger | WandbLogger):
            continue
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (H, W, C)
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, np.ascontiguousarray(pixels), key=key, step=epoch)
        else:
            logger.log_image(key, [pixels], step=global_step)


@contextmanager
def naming_refusals(written: Callable[[], str]) -> Iterator[None]:
    """Give a refused write's ``OSError`` (``errors.REFUSALS``) the file ``written()`` when it names none, so that the
    console's one line names it."""
    try:
        yield
    except Exception as err:
        refusal = refused_write(err)
        if refusal is not None and refusal.filename is None:
            refusal.filename = written()
        raise


class TensorBoardFiles(TensorBoardLogger):
    """Lightning's TensorBoard logger naming its event file in a refused write. TensorBoard writes in a thread of its
    own and raises the refusal at its next write: creating the writer (its first record), a metric, the end."""

    def event_file(self) -> str:
        """The newest event file of this run (its folder, before the writer made one)."""
        files = sorted(Path(self.log_dir).glob("events.out.tfevents.*"), key=lambda path: path.stat().st_mtime)
        return str(files[-1] if files else self.log_dir)

    @property
    def experiment(self) -> Any:
        with naming_refusals(self.event_file):
            return super().experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with naming_refusals(self.event_file):
            super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        with naming_refusals(self.event_file):
            super().log_hyperparams(params, metrics)

    def finalize(self, status: str) -> None:
        with naming_refusals(self.event_file):
            super().finalize(status)


class CSVFiles(CSVLogger):
    """Lightning's CSV logger naming its file in a refused write: ``metrics.csv``, or ``hparams.yaml``."""

    def metrics_file(self) -> str:
        return self.experiment.metrics_file_path

    def log_hyperparams(self, params: Any = None) -> None:
        with naming_refusals(lambda: str(Path(self.log_dir, "hparams.yaml"))):
            super().log_hyperparams(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with naming_refusals(self.metrics_file):
            super().log_metrics(metrics, step)

    def save(self) -> None:
        with naming_refusals(self.metrics_file):
            super().save()
