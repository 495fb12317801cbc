"""Sweeps at scale: one GPU per job (``gpus``), what a job returns and how a sweep went (``summary``), Optuna
studies that continue (``sweeper_config``, ``optuna_study``), SLURM requeue (``requeue``)."""

from recursive_ae_gan.sweeps.summary import SweepSummary

__all__ = ["SweepSummary"]
