"""Sweeps at scale: one GPU per job (``gpus``), what a job returns and how a sweep went (``summary``), the Optuna
sweeper (``sweeper_config``, ``optuna_study``) and a job's side of it (``trial``), SLURM requeue (``requeue``)."""

from recursive_ae_gan.sweeps.summary import SweepSummary

__all__ = ["SweepSummary"]
