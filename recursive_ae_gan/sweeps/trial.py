"""A job's side of an Optuna search (``hydra/sweeper=optuna``): :class:`ReportToTrial` tells the job's trial
``optimized_metric`` at every validation and stops the fit when the study's pruner says so.

The job finds its trial from its own Hydra config: the study's storage and name as the sweeper resolves them
(``sweeps.optuna_study``), and its job number, which is the trial's number. Optuna is imported only here, and
only in a job of such a search.
"""

from __future__ import annotations

import logging
import math

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from hydra_plugins.recursive_ae_gan.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)

SWEEPER = f"{OptunaSweeper.__module__}.{OptunaSweeper.__name__}"


class ReportToTrial(L.Callback):
    """Reports ``metric`` after every validation (its epoch is the step) to ``trial``, from rank 0, and stops the
    fit at the end of that epoch, on every rank, when the study's pruner prunes the trial (``pruned_after``).

    Not optuna-integration's ``PyTorchLightningPruningCallback``: that one raises ``TrialPruned`` out of the hook
    in one process, and under DDP (``hydra/launcher=slurm`` with several devices) refuses any storage but a
    database, the default journal file included. Stopping as Lightning's early stopping does lets the fit end as
    any fit ends: its last checkpoint, then a result that says ``pruned``.
    """

    def __init__(self, trial: object, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_after: int | None = None  # the epoch after which the pruner stopped the fit

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.metric)
            if value is not None and math.isfinite(value := float(value)):  # once per validation, not per step
                self.trial.report(value, step=trainer.current_epoch)
                prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            self.pruned_after = trainer.current_epoch
            trainer.should_stop = True


def trial_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """``[ReportToTrial]`` in a job of an Optuna search whose trial is running, else nothing."""
    if not HydraConfig.initialized():
        return []
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or hydra.sweeper.get("_target_") != SWEEPER:
        return []
    import optuna

    from recursive_ae_gan.sweeps.optuna_study import open_storage, storage_address, study_name_of

    storage = open_storage(storage_address(hydra.sweeper.storage, hydra.sweep.dir))
    name, number = study_name_of(hydra.sweeper.study_name, hydra.sweep.dir), int(hydra.job.num)
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    except KeyError:  # run by hand with hydra/sweeper=optuna's config, not by the sweeper
        log.warning("study %s has no trial %d: this job reports to no trial", name, number)
        return []
    if storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
        return []  # told already (a re-run of a finished job): nothing more to report
    pruner = instantiate(hydra.sweeper.pruner) if hydra.sweeper.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    return [ReportToTrial(optuna.trial.Trial(study, trial_id), cfg.get("optimized_metric") or "score")]


def pruned_after(trainer: L.Trainer) -> int | None:
    """The epoch after which the job's pruner stopped the fit, or None."""
    return next((c.pruned_after for c in trainer.callbacks if isinstance(c, ReportToTrial)), None)
