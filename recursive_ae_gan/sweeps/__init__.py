"""Sweeps at scale: jobs on GPUs, what a job returns to the sweeper, the sweep summary, Optuna, SLURM requeue."""

from recursive_ae_gan.sweeps.jobs import SweepSummary

__all__ = ["SweepSummary"]
