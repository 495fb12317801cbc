"""Continuing a run in its own directory: ``ckpt_path=auto`` for a single run, and every job of a multirun.

A run directory that holds an earlier attempt of the same run goes on from it, so that re-running a killed
command (the same overrides, the same ``hydra.run.dir`` or ``hydra.sweep.dir``) loses nothing:

- finished (``metrics.json`` says ok): not trained again; the stored result is the run's result;
- unfinished (killed, stopped): resumes from its ``checkpoints/last.ckpt`` (from scratch when it has none);
- failed, diverged or collapsed: kept as it is, unless ``rerun_failed=true``, which continues it like an
  unfinished run;
- nothing there: trains from scratch.

"The same run" is judged by the settings an attempt writes when its training starts (``trained_config/``): a
directory trained under other settings is refused with one line naming the keys, and left as it was. Keys
that do not change what was trained are not compared (``run.identity.IGNORED_KEYS``: paths, loggers, tags, ...), and
``trainer.max_epochs`` may grow: a finished run then trains on from its last checkpoint. An explicit
``ckpt_path=FILE`` resumes from that file whatever its settings. Docs: ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from recursive_ae_gan.core.atomic import atomic_write
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.records import Damaged, read_json, read_yaml
from recursive_ae_gan.run.identity import current_settings, ignored, leaves

log = logging.getLogger(__name__)

AUTO = "auto"  # ckpt_path=auto
TRAINED = "trained_config"  # <run dir>/trained_config/: the settings and Hydra files of the attempt that trained it
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")  # what Hydra writes into <run dir>/.hydra/
EXTENDABLE = "trainer.max_epochs"  # may grow between attempts: the run trains on


class NotContinued(UserError):
    """This attempt does not train (refused, or its run failed before): the run directory stays as it was."""


@dataclass(frozen=True)
class Continuation:
    """How this attempt goes on: a finished run's stored ``result``, or the checkpoint to resume from (None: none)."""

    result: dict | None = None
    ckpt_path: Path | None = None


def trained_settings(cfg: DictConfig) -> dict[str, Any]:
    """The config's keys that decide what is trained, flattened (``model.lr``), values resolved (``data.seed``
    of ``${seed}`` is the seed), except those that follow the run directory (``${paths.output_dir}/...``)."""
    flat = {}
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=False)).items():
        if ignored(key):
            continue
        written = json.dumps(value)
        if "${" in written and "paths." not in written and "hydra:" not in written:
            value = OmegaConf.select(cfg, key)
            value = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
        flat[key] = value
    return current_settings(flat)


def _unbounded(max_epochs: object) -> bool:
    return max_epochs is None or max_epochs == -1


def differences(trained: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=now (trained under before)`` for every compared key that differs; ``trainer.max_epochs`` may grow.

    A key the run was trained without that is now ``null`` or ``false`` is an option added to the project since,
    off: it trains as before (so a new release can continue the runs of an older one).
    """
    unset = "unset"
    lines = []
    for key in dict.fromkeys([*trained, *now]):
        before, after = trained.get(key, unset), now.get(key, unset)
        if before == after or (before == unset and after in (None, False)):
            continue
        if key == EXTENDABLE and not _unbounded(before) and (_unbounded(after) or after > before):
            continue
        lines.append(f"{key}={after} (trained under {before})")
    return lines


def stored_result(path: Path) -> dict:
    """The result an earlier attempt wrote (``metrics.json``); empty when there is none (killed before the end, or
    never run) or when it is damaged, which is said: the run then counts as unfinished and goes on from its
    ``last.ckpt``, whose end writes the result again."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return {}
    except Damaged as err:
        log.warning("%s: the run counts as unfinished", err)
        return {}


def settings_trained(path: Path, last: Path) -> dict[str, Any]:
    """The settings the run in the directory was trained under (``trained_config/settings.yaml``)."""
    try:
        settings = read_yaml(path)
        if not isinstance(settings, dict):
            raise Damaged(f"{path} is damaged (not a mapping of settings; cut short?)")
    except Damaged as err:
        raise NotContinued(
            f"{err}: the settings of the run in {path.parent.parent} cannot be compared with this command's; resume "
            f"it on purpose with ckpt_path={last}, or use another run directory"
        ) from None
    return current_settings(settings)


def continuation(cfg: DictConfig, automatic: bool) -> Continuation:
    """How this attempt goes on from what its run directory holds (module docstring).

    ``automatic``: a multirun's job, which continues without ``ckpt_path=auto``. Read-only, so that every
    DDP rank decides the same; :func:`start` writes, on rank 0, once training starts.
    """
    if cfg.ckpt_path not in (None, AUTO):
        return Continuation(ckpt_path=Path(cfg.ckpt_path).expanduser())
    if cfg.ckpt_path is None and not automatic:
        return Continuation()
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    trained_file = out / TRAINED / "settings.yaml"
    metrics = stored_result(out / "metrics.json")
    status = metrics.get("status")
    trained = settings_trained(trained_file, last) if trained_file.is_file() else None
    if trained is None and (last.is_file() or status == "ok"):
        raise NotContinued(
            f"{out} holds a run but not the settings it was trained under (no {TRAINED}/settings.yaml): "
            f"resume it on purpose with ckpt_path={last}, or use another run directory"
        )
    now = trained_settings(cfg)
    if trained is not None and (differ := differences(trained, now)):
        leave_as_found(out)
        raise NotContinued(
            f"{out} holds a run trained under other settings: {', '.join(differ)}; "
            "use its overrides, another run directory, or ckpt_path=FILE to resume from it on purpose"
        )
    if status == "ok" and trained.get(EXTENDABLE) == now.get(EXTENDABLE):
        leave_as_found(out)
        log.info("%s holds this run, finished: not trained again (its metrics.json is the result)", out)
        return Continuation(result=metrics)
    if status not in (None, "ok") and not cfg.rerun_failed:  # also one that failed before training (no settings)
        leave_as_found(out)
        raise NotContinued(
            f"{out} holds a run that ended {status}: {metrics.get('error', 'see its metrics.json')}; "
            "rerun_failed=true runs it again"
        )
    if last.is_file():
        how = f"finished, now to {EXTENDABLE}={now.get(EXTENDABLE)}" if status == "ok" else status or "unfinished"
        log.info("%s holds this run, %s: resuming from %s", out, how, last)
        return Continuation(ckpt_path=last)
    if status == "ok":
        raise NotContinued(f"{out} holds this run, finished, but no {last}: it cannot be extended")
    return Continuation()


def start(cfg: DictConfig) -> None:
    """Rank 0, as training starts: the run directory now holds an unfinished attempt of this run.

    Its stale ``metrics.json`` goes first (a kill from here on leaves an unfinished run, not an earlier result),
    then Hydra's files and the settings of this attempt are kept in ``trained_config/``: Hydra rewrites
    ``.hydra/`` whenever a job starts, before this attempt can compare with it.
    """
    out = Path(cfg.paths.output_dir)
    (out / "metrics.json").unlink(missing_ok=True)
    (out / TRAINED).mkdir(parents=True, exist_ok=True)
    for name in HYDRA_FILES:
        if (out / ".hydra" / name).is_file():
            atomic_write(out / TRAINED / name, (out / ".hydra" / name).read_bytes())
    atomic_write(out / TRAINED / "settings.yaml", yaml.safe_dump(trained_settings(cfg), sort_keys=False))


def leave_as_found(out: Path) -> None:
    """For an attempt that does not train ``out``: put back the ``.hydra/`` files of the attempt that trained it,
    which Hydra has just replaced with this attempt's, and stop this process's log from writing into its log file,
    so that the directory still describes, and logs, only the run it holds."""
    for name in HYDRA_FILES:
        if (out / TRAINED / name).is_file() and (out / ".hydra").is_dir():
            atomic_write(out / ".hydra" / name, (out / TRAINED / name).read_bytes())
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out.absolute():
            root.removeHandler(handler)
            handler.close()
