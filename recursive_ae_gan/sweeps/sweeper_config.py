"""``hydra/sweeper=optuna``: the config of the project's Optuna sweeper (``hydra_plugins/recursive_ae_gan/
optuna_sweeper.py``, ``sweeps.optuna_study``), in the shape of hydra-optuna-sweeper's, plus ``pruner``; the
samplers (``hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|gp|qmc|grid``) and pruners
(``hydra/sweeper/pruner=median|percentile|successive_halving|hyperband``) as config groups. Registered on
import (by ``run.train``); Optuna itself is imported only when a sweep starts.

Each sampler's and pruner's keys and defaults are Optuna's (optuna 5): a key set here is passed as is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from omegaconf import MISSING

from hydra_plugins.recursive_ae_gan.optuna_sweeper import OptunaSweeper

# Hydra's plugin scan (once per process) runs every plugin's module: hydra-optuna-sweeper's, if it is still
# installed beside the project, stores its own hydra/sweeper=optuna. Scan first, so that ours replaces it.
Plugins.instance()
Plugins.instance().register(OptunaSweeper)  # the scan may not see an editable install's hydra_plugins


@dataclasses.dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    constant_liar: bool = True
    consider_endpoints: bool | None = None


@dataclasses.dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclasses.dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1
    sigma0: float | None = None
    x0: dict[str, Any] | None = None
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    consider_pruned_trials: bool = False


@dataclasses.dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclasses.dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclasses.dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclasses.dataclass
class GridSamplerConf:
    """Every point of the ``choice``/``range`` parameters once; the sweeper builds it from the search space."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclasses.dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclasses.dataclass
class PercentilePrunerConf:
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclasses.dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclasses.dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclasses.dataclass
class OptunaSweeperConf:
    """``hydra/sweeper=optuna``: hydra-optuna-sweeper's keys (docs/scaling.md, "Optuna"), and ``pruner``."""

    _target_: str = f"{OptunaSweeper.__module__}.{OptunaSweeper.__name__}"
    defaults: list[Any] = dataclasses.field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # minimize or maximize: the jobs return one value, optimized_metric
    # A database URL (sqlite:///study.db, postgresql://...) or an Optuna journal file; null: the journal file
    # <sweep dir>/optuna.journal, so that jobs in other processes reach the study and a re-run continues it.
    storage: str | None = None
    study_name: str | None = None  # null: the sweep directory's name
    n_trials: int = 20  # the study's size: a re-run continues a study to n_trials in all
    n_jobs: int = 2  # trials asked at once, one batch of jobs for the launcher
    # The search stops after a batch whose share of failed trials is above this; 1.0: never (failed trials are
    # told FAIL and the search goes on).
    max_failure_rate: float = 1.0
    params: dict[str, str] | None = None  # name: Hydra sweep grammar (interval, choice, range, tag(log, ...))
    custom_search_space: str | None = None  # a function (cfg, trial) that suggests more parameters
    pruner: Any = None  # an Optuna pruner (_target_), told optimized_metric at every validation of a job


def _store(group: str, name: str, node: type) -> None:
    ConfigStore.instance().store(group=group, name=name, node=node, provider="recursive_ae_gan")


_store("hydra/sweeper", "optuna", OptunaSweeperConf)
SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "gp": GPSamplerConf,
    "qmc": QMCSamplerConf,
    "grid": GridSamplerConf,
}
PRUNERS = {
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}
for _name, _node in SAMPLERS.items():
    _store("hydra/sweeper/sampler", _name, _node)
for _name, _node in PRUNERS.items():
    _store("hydra/sweeper/pruner", _name, _node)
