"""Run identity: which config keys decide what a run trains.

Three questions ask it: is the run in this directory the run this command describes (``run.continuation``)? What
is this run called (``run.loggers``' run names)? Which runs are repetitions of one setting (``analysis.runs``)?
Keys in ``IGNORED_KEYS`` never make two runs different; the seeds (``SEED_KEYS``) tell the repetitions of one
setting apart. A class named by a path it had before a move (``compat.MOVED_MODULES``) is the same class.
"""

from __future__ import annotations

from typing import Any

from recursive_ae_gan.compat import current_target, current_targets

# The seeds: weights and shuffling (`seed`), the data order (`data.seed`, `${seed}` by default) and the
# train/validation split (`data.split_seed`). Runs are paired over the values of all three.
SEED_KEYS = ("seed", "data.seed", "data.split_seed")
# Keys (and the subtrees under them) that do not change what a run trains: where it reads and writes, what
# it resumes from, how it is logged and labelled, what a sweep returns, and the collapse check, which
# judges the trained model (its runs then count as collapsed) without changing it.
IGNORED_KEYS = (
    "paths", "ckpt_path", "rerun_failed", "tags", "logger", "extras", "jobs_per_gpu", "optimized_metric",
    "collapse_threshold", "data.root", "data.download", "trainer.default_root_dir", "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)  # fmt: skip


def ignored(key: str, seeds: bool = False) -> bool:
    """Whether ``key`` leaves what is trained unchanged (with ``seeds``: or is a seed).

    ``key`` is dotted (``model.lr``), an override's (``+x.y``, ``~x``) or a config group's (``logger/mlflow``)."""
    key = key.lstrip("+~")
    return any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in (*IGNORED_KEYS, *(SEED_KEYS if seeds else ())))


def leaves(container: Any, prefix: str = "") -> dict[str, Any]:
    """A plain config container flattened to ``{dotted key: value}``; lists are leaves (compared whole)."""
    if not (isinstance(container, dict) and container):
        return {prefix[:-1]: container}
    flat: dict[str, Any] = {}
    for key, value in container.items():
        flat |= leaves(value, f"{prefix}{key}.")
    return flat


def current_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """Flattened settings (``leaves``) with every ``_target_`` as today's import path, so that a run configured
    before a move and one configured after it have equal settings."""
    return {
        key: current_target(value) if key.endswith("_target_") and isinstance(value, str) else current_targets(value)
        for key, value in flat.items()
    }
