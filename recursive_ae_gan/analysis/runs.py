"""Run directories as ``report`` reads them: a run's config, result files and curves, and groups over seeds.

A run is any folder holding ``.hydra/config.yaml``. Runs whose composed configs differ only in their seeds,
or in keys that do not change what is trained (where a run reads and writes, how it logs), form one group:
the repetitions of one setting, summarised over seeds. Everything else splits groups, so a key that could
change the result (``model.lr``, ``trainer.max_epochs``, ``data.in_memory``, ...) never mixes two settings.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from recursive_ae_gan.core.keys import parse_step_key, step_key, steps_with
from recursive_ae_gan.core.records import RUN_CONFIG_KEYS, Damaged, read_config, read_json
from recursive_ae_gan.run.identity import SEED_KEYS, current_settings, ignored, leaves

LOSS_TAGS = {"train": "train/loss_epoch", "val": "val/loss"}


@dataclass
class Run:
    """What a run directory holds: its config, Hydra's group choices and overrides, and its result files."""

    path: Path
    config: DictConfig
    choices: dict
    metrics: dict  # metrics.json; empty when the run never finished
    evaluation: dict  # the deepest eval.json under the run; empty when none
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml: the command line's

    @property
    def status(self) -> str:
        return self.metrics.get("status", "missing")

    @property
    def ok(self) -> bool:
        """Only runs that finished and did not collapse enter the statistics."""
        return self.status == "ok"


@dataclass
class Group:
    """The runs of one setting (their configs equal apart from the seeds and the ignored keys)."""

    label: str  # the overrides that tell this group from the others, e.g. ``model=rae,model.lr=0.01``
    runs: list[Run]
    differs: list[str] = field(default_factory=list)  # those overrides, one by one

    @property
    def ok(self) -> list[Run]:
        return [run for run in self.runs if run.ok]

    @property
    def status(self) -> str:
        """``3 ok, 1 failed``; a group of one run: its status (``ok``, ``missing``, ...)."""
        if len(self.runs) == 1:
            return self.runs[0].status
        counts = Counter(run.status for run in self.runs)
        return ", ".join(f"{n} {status}" for status, n in counts.items())


def _path_order(path: Path) -> list[str | int]:
    """Numbers in a path compare as numbers: sweep job ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def _read_json(path: Path) -> dict:
    """A result file's contents; empty when there is none (a run not finished, not evaluated)."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return {}


def read_run(path: Path) -> Run:
    """The run in ``path`` (a folder holding ``.hydra/config.yaml``); ``Damaged`` names a file of it that is."""
    hydra_dir = path / ".hydra"
    hydra_file, overrides_file = hydra_dir / "hydra.yaml", hydra_dir / "overrides.yaml"
    choices = read_config(hydra_file, ["hydra.runtime.choices"]).hydra.runtime.choices if hydra_file.is_file() else {}
    evaluations = [read_json(p) for p in sorted(path.rglob("eval.json"))]
    return Run(
        path=path,
        config=read_config(hydra_dir / "config.yaml", RUN_CONFIG_KEYS),
        choices=dict(choices),
        metrics=_read_json(path / "metrics.json"),
        evaluation=max(evaluations, key=lambda e: e.get("max_depth", -1), default={}),
        overrides=list(read_config(overrides_file)) if overrides_file.is_file() else [],
    )


def find_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every run under ``root``, in path order (job ``2`` before ``10``), and a line for each run left out because
    a file of it is damaged (cut short, not text, not what it should be)."""
    runs, left_out = [], []
    for config_file in sorted(root.rglob(".hydra/config.yaml"), key=_path_order):
        path = config_file.parent.parent
        try:
            runs.append(read_run(path))
        except Damaged as err:
            left_out.append(f"left out run {path.relative_to(root).as_posix()}: {err}")
    return runs, left_out


def dataset_name(run: Run) -> str | None:
    """The run's dataset, short: ``data.dataset`` names a torchvision class (``torchvision.datasets.MNIST``:
    ``mnist``) or ``folder``; runs from before the data package name it already (``mnist``)."""
    dataset = run.config.get("data", {}).get("dataset")
    return dataset.rpartition(".")[2].lower() if isinstance(dataset, str) else None


def last_step(metrics: dict, metric: str) -> int | None:
    """The deepest step with ``test/step_i/<metric>`` in ``metrics``."""
    return max(steps_with(metrics, "test", metric), default=None)


def run_result(run: Run, key: str) -> float | None:
    """A test metric of the run's final weights: from metrics.json, else from its eval.json (deeper steps, or a
    realism test that ``evaluate`` ran)."""
    value = run.metrics.get(key)
    return value if value is not None else run.evaluation.get(key)


def judged_steps(group_or_run: Group | Run) -> list[int]:
    """The steps whose realism a fresh judge tested, in any ok run of a group (or in a run)."""
    runs = group_or_run.ok if isinstance(group_or_run, Group) else [group_or_run]
    keys = {key for run in runs for key in (*run.metrics, *run.evaluation)}
    return steps_with(keys, "test", "judge_acc")


def score_metric(run: Run) -> str | None:
    """The run's headline metric (``mse`` or ``bce``), from ``score_name`` = ``test/step_0/<metric>``."""
    name = run.metrics.get("score_name") or run.evaluation.get("score_name")
    return key.name if name and (key := parse_step_key(name)) else None


def run_tags(run: Run) -> list[str]:
    """The run's ``tags`` (from its config, so a failed run has them too); none for runs from before tags."""
    return list(run.config.get("tags") or [])


def run_seeds(run: Run) -> tuple:
    """The values of ``SEED_KEYS`` (``data.seed: ${seed}`` resolved; ``None`` where a run has no such key):
    two runs with equal seeds saw the same initial weights, data order and split."""
    return tuple(OmegaConf.select(run.config, key, throw_on_resolution_failure=False) for key in SEED_KEYS)


def setting(run: Run) -> dict[str, str]:
    """What the run trains: its composed config flattened to ``{dotted key: JSON value}``, without the seeds and
    the keys that do not change what is trained (``run.identity``); interpolations (``${seed}``) as written."""
    flat = current_settings(leaves(OmegaConf.to_container(run.config, resolve=False)))
    return {key: json.dumps(value, sort_keys=True) for key, value in flat.items() if not ignored(key, seeds=True)}


def override_key(override: str) -> str:
    """``model.lr`` of ``model.lr=0.01``, ``model`` of ``model=rae``."""
    return override.split("=", 1)[0].lstrip("+~")


def label_overrides(run: Run) -> list[str]:
    """The run's overrides that can change what it trains (no seeds, paths, loggers, ...)."""
    return [o for o in run.overrides if not ignored(override_key(o), seeds=True)]


def group_runs(runs: list[Run]) -> list[Group]:
    """The runs grouped by ``setting`` (groups in the order of their first run), each labelled by the overrides
    that not every group shares; a group with none is named by its model choice."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(tuple(sorted(setting(run).items())), []).append(run)
    members = list(by_key.values())
    shared = set.intersection(*(set(label_overrides(m[0])) for m in members)) if members else set()
    groups, seen = [], {}
    for same in members:
        differs = [o for o in label_overrides(same[0]) if o not in shared]
        label = ",".join(differs) or f"model={same[0].choices.get('model', '?')}"
        seen[label] = seen.get(label, 0) + 1
        groups.append(Group(label if seen[label] == 1 else f"{label} #{seen[label]}", same, differs))
    return groups


def loss_curves(run: Run) -> dict[str, tuple[list[float], list[float]]]:
    """``{"train"|"val": (epochs, losses)}`` from the run's TensorBoard event files."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for folder in sorted({p.parent for p in run.path.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        tags = events.Tags()["scalars"]
        # Lightning logs the epoch at the same global step as every other scalar: x-axis in epochs.
        epoch_at = {e.step: e.value for e in events.Scalars("epoch")} if "epoch" in tags else {}
        for name, tag in LOSS_TAGS.items():
            if tag in tags:
                points = events.Scalars(tag)
                curves[name] = ([epoch_at.get(e.step, math.nan) for e in points], [e.value for e in points])
    return curves


def step_curve(run: Run) -> tuple[str, list[int], list[float]] | None:
    """``(metric, steps, values)``: the test score per step, from eval.json where it goes deeper than metrics.json."""
    metric = score_metric(run)
    if metric is None:
        return None
    trained, evaluated = last_step(run.metrics, metric), last_step(run.evaluation, metric)
    if evaluated is not None and (trained is None or evaluated > trained):
        source, depth = run.evaluation, evaluated
    elif trained is not None:
        source, depth = run.metrics, trained
    else:
        return None
    steps = list(range(depth + 1))
    return metric, steps, [source[step_key("test", i, metric)] for i in steps]
