"""Time limits and preemption under ``hydra/launcher=slurm``: the job is requeued and continues where it stopped.

SLURM sends every task of a job SIGUSR2 ``signal_delay_s`` before its time limit (submitit's ``--signal``), and
at a preemption on clusters that send the user's signal then. submitit's handler, in every job it runs, requeues
the job from rank 0 (it pickles the call again with the launcher's ``checkpoint()``, then ``scontrol requeue``)
and exits at once, from wherever the main thread is: between two parameters' updates of an optimizer step
(``last.ckpt``, written on the way out, would hold half a step), or, under DDP, on rank 0 alone while the other
ranks wait for it in a collective. :class:`StopForRequeue` keeps submitit's requeue and replaces its exit with
Lightning's SIGTERM stop: every rank stops at the end of its batch, where ``last_checkpoint``
(``save_on_exception``) writes ``last.ckpt``. The requeued job runs the same call in the same job directory, and
``run.continuation`` continues from that checkpoint. Docs: ``docs/scaling.md``, "Time limits and preemption".
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from submitit import JobEnvironment  # the sweep extra, which hydra/launcher=slurm needs

log = logging.getLogger(__name__)


class StopForRequeue(Callback):
    """``hydra.callbacks.requeue`` of ``conf/hydra/launcher/slurm.yaml``: in each job, submitit's requeue signal
    requeues the job (submitit), then stops the training as a SIGTERM does (Lightning)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        requeue_signal = signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]  # USR2 unless SUBMITIT_PREEMPT_SIGNAL
        requeue = signal.getsignal(requeue_signal)  # submitit's, installed before the job's call
        if not callable(requeue):  # not a job of submitit's: a single run (no -m) with hydra/launcher=slurm
            return
        ignore = signal.getsignal(signal.SIGTERM)  # submitit's too: logs a SIGTERM and goes on

        def requeue_then_stop(signum: int, frame: FrameType | None) -> None:
            try:
                requeue(signum, frame)  # rank 0: pickle the call again, `scontrol requeue`, sys.exit
            except SystemExit:  # requeued (not requeued: submitit raises an error, which fails the job)
                if signal.getsignal(signal.SIGTERM) == ignore:  # no Lightning run to stop (loading data): exit now
                    raise
                log.warning("requeued: training stops at the end of this batch, writing checkpoints/last.ckpt")
            signal.raise_signal(signal.SIGTERM)  # every rank: Lightning stops after the batch, as on SLURM's SIGTERM

        signal.signal(requeue_signal, requeue_then_stop)
