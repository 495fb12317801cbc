"""Train, then test, one model: ``python -m recursive_ae_gan.train model=rae_gan data=cifar10``.

Composes ``conf/train.yaml``, checks it (``run.config.check``), instantiates the datamodule, callbacks,
loggers and trainer, loads the data (its image shape sizes the networks), builds the model, fits,
tests the final weights, and writes ``metrics.json`` into the run directory (rank 0 only).
Sweeps: ``python -m recursive_ae_gan.train -m data=mnist,cifar10 model=ae,rae model.recursion_depth=0,1,2``.
The same command again (same ``hydra.sweep.dir``; one run: ``ckpt_path=auto``) continues it (``run.continuation``).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf

from recursive_ae_gan.core import console
from recursive_ae_gan.core.atomic import atomic_write
from recursive_ae_gan.core.errors import CollapsedRunError, RunFailed, WriteFailed, user_error
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.models import AdversarialAutoencoder
from recursive_ae_gan.models.realism import realism
from recursive_ae_gan.run.checkpoints import check_fits, read_checkpoint
from recursive_ae_gan.run.config import check
from recursive_ae_gan.run.continuation import NotContinued, continuation, start
from recursive_ae_gan.run.lock import owned_here
from recursive_ae_gan.run.loggers import check_installed, print_config_tree, record_result, record_tags
from recursive_ae_gan.sweeps import sweeper_config  # noqa: F401  (registers hydra/sweeper=optuna)
from recursive_ae_gan.sweeps.gpus import pin_job_to_gpu
from recursive_ae_gan.sweeps.summary import objective
from recursive_ae_gan.sweeps.trial import pruned_after, trial_callbacks

log = logging.getLogger(__name__)


def write_metrics(cfg: DictConfig, result: dict) -> None:
    atomic_write(Path(cfg.paths.output_dir, "metrics.json"), json.dumps(result, indent=2) + "\n")


DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")  # Lightning's, each with a _find_unused_... twin
# What Lightning's accelerator="auto" takes, in its order ("gpu": the same but the TPU).
AUTO_ORDER = (("tpu", XLAAccelerator), ("mps", MPSAccelerator), ("cuda", CUDAAccelerator))


def processes_per_node(accelerator: str, devices: object) -> int:
    """How many processes ``Trainer(accelerator=..., devices=...)`` starts on each node, as Lightning counts them:
    its accelerator's own parsing of ``devices`` (a number, indices, ``auto``: every device it finds)."""
    if accelerator in ("auto", "gpu"):  # Lightning's choice: the first of these available, else the CPU
        found = [name for name, kind in AUTO_ORDER[accelerator == "gpu" :] if kind.is_available()]
        accelerator = found[0] if found else "cpu"  # gpu without one: the Trainer then says so in one line
    chosen = AcceleratorRegistry.get(accelerator)
    devices = OmegaConf.to_object(devices) if isinstance(devices, ListConfig) else devices
    devices = chosen.auto_device_count() if devices == "auto" else devices
    return len(chosen.get_parallel_devices(chosen.parse_devices(devices)))


def strategy_for(cfg: DictConfig) -> object:
    """``trainer.strategy``, but DDP with ``find_unused_parameters`` for the game.

    Each of the game's two steps leaves the other network without gradients, which plain DDP (Lightning's
    ``ddp``, and what ``auto`` picks for several devices) stops at with "parameters that were not used in
    producing the loss"; Lightning's ``*_find_unused_parameters_true`` strategies are the same DDP allowing it.
    """
    strategy, trainer = cfg.trainer.strategy, cfg.trainer
    if not issubclass(get_class(cfg.model._target_), AdversarialAutoencoder):
        return strategy
    if strategy == "auto" and (trainer.num_nodes > 1 or processes_per_node(trainer.accelerator, trainer.devices) > 1):
        strategy = "ddp"  # what Lightning's auto chooses for several processes outside a notebook
    if strategy not in DDP_STRATEGIES:
        return strategy
    strategy = f"{strategy}_find_unused_parameters_true"
    rank_zero_info(f"trainer.strategy={strategy}: each step of the game leaves one of its networks unused")
    return strategy


def train(cfg: DictConfig, automatic: bool = False) -> dict:
    """Fit and test the configured model; returns what it writes to ``metrics.json``.

    ``score`` is the headline metric: the test reconstruction loss of step 0. ``automatic``: continue what the
    run directory holds as ``ckpt_path=auto`` does (a multirun's jobs; ``run.continuation``). The run directory is
    this process's from before it is read until the result is written (``run.lock``).
    """
    check(cfg)  # types, ranges and unknown keys, before any data is loaded or any model built
    check_installed(cfg.get("logger"))  # a chosen logger's client package, before anything starts
    with owned_here(Path(cfg.paths.output_dir)):  # another process training this directory: RunningElsewhere
        earlier = continuation(cfg, automatic)  # before anything is written into the run directory
        if earlier.result is not None:  # this run finished in this directory: its stored result
            return earlier.result
        if cfg.extras.print_config:
            print_config_tree(cfg, Path(cfg.paths.output_dir, "config_tree.log"))
        datamodule, model, trainer = instantiate_run(cfg)
        if earlier.ckpt_path:  # a one-line error for a missing, unreadable or mismatched checkpoint, before fit
            check_fits(read_checkpoint(earlier.ckpt_path), model, earlier.ckpt_path)
        if trainer.is_global_zero:
            start(cfg)  # from here on, a kill leaves an unfinished run that the same command continues
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=earlier.ckpt_path)
        except RunFailed as err:
            if trainer.is_global_zero:
                write_metrics(cfg, {"status": err.status, "error": str(err), "tags": list(cfg.tags)})
            raise
        if (epoch := pruned_after(trainer)) is not None:
            return prune(cfg, trainer, epoch)
        return finish(cfg, trainer, model, datamodule)


def instantiate_run(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """The datamodule, the model and the trainer with its callbacks and loggers; the data is loaded after the
    trainer is built (its ranks), before the model, since its image shape sizes the networks."""
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + trial_callbacks(cfg)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(
        cfg.trainer, strategy=strategy_for(cfg), callbacks=callbacks, logger=loggers or False
    )
    if trainer.is_global_zero:
        record_tags(trainer.loggers, cfg.tags)
    if trainer.local_rank == 0:  # other DDP ranks start later, in fit, and find the data in place
        datamodule.prepare_data()
    datamodule.setup("fit")
    L.seed_everything(cfg.seed, workers=True)  # the weights' initialisation
    model: L.LightningModule = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    return datamodule, model, trainer


def finish(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule) -> dict:
    """Test the final weights (as the report tests them), write the result, and fail a collapsed run."""
    if not any(k.startswith("val/") for k in trainer.callback_metrics):  # resumed after its last epoch: no validation
        trainer.validate(model, datamodule=datamodule, verbose=False)  # so validate the final weights, as it did
    validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}  # the last epoch's
    trainer.test(model, datamodule=datamodule)
    tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if cfg.get("realism") is not None and trainer.is_global_zero:  # the two-sample test of every trained step
        images = {split: datamodule.images(split) for split in ("train", "test")}
        accelerator = "gpu" if trainer.strategy.root_device.type == "cuda" else "cpu"
        tested |= realism(
            model, images["train"], images["test"], model.eval_depth, instantiate(cfg.realism), accelerator
        )
    metrics = dict(sorted((validated | tested).items()))
    score_name = step_key("test", 0, model.loss_name)
    variation = metrics[step_key("test", 0, "variation")]
    collapsed = not variation >= cfg.collapse_threshold  # NaN counts as collapsed
    result = {"status": "collapsed" if collapsed else "ok", "score_name": score_name, "score": metrics[score_name]}
    result |= {"tags": list(cfg.tags)} | metrics
    if trainer.is_global_zero:
        record_result(trainer.loggers, {**datamodule.hparams, **model.hparams}, cfg.tags, result["score"])
        write_metrics(cfg, result)
    if collapsed:
        raise CollapsedRunError(
            f"the model collapsed: its test reconstructions vary {variation:.3f}x as much as the inputs "
            f"(threshold collapse_threshold={cfg.collapse_threshold}); try a lower model.lr or another seed"
        )
    return result


def prune(cfg: DictConfig, trainer: L.Trainer, epoch: int) -> dict:
    """A trial the search's pruner stopped: its result is its last validation, ``"status": "pruned"``; it is not
    tested (the search judged it on validation only, and its test would cost a pruned trial's time)."""
    validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    result = {"status": "pruned", "pruned_after_epoch": epoch, "tags": list(cfg.tags)} | dict(sorted(validated.items()))
    if trainer.is_global_zero:
        write_metrics(cfg, result)
    log.info("pruned by the search after epoch %d: %s", epoch, Path(cfg.paths.output_dir, "metrics.json"))
    return result


@hydra.main(version_base="1.3", config_path=console.CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's task: train; returns ``optimized_metric`` (null: ``score``) to sweepers, None for a failed job.

    None, not NaN: the Optuna sweeper records a value that is not a number as a failed trial and goes on,
    but crashes on NaN (``sweeps.summary.objective``, ``docs/scaling.md``).
    """
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        # Here too: an error that left the task would make Hydra add a line of its own.
        with console.one_line_errors(console.MOVE_THE_RUN):
            return objective(train(cfg), cfg.optimized_metric)
    pin_job_to_gpu(HydraConfig.get())  # hydra/launcher=gpus: one GPU per job, before anything touches CUDA
    try:
        return objective(train(cfg, automatic=True), cfg.optimized_metric)
    except NotContinued as err:  # refused, failed in an earlier attempt, or trained by another process: left as is
        log.error("job %s: %s", HydraConfig.get().job.num, err)
        return None
    except Exception as err:  # one failed job must not end the sweep: record why, go on with the next
        record_failure(cfg, err)
        return None


def record_failure(cfg: DictConfig, err: Exception) -> None:
    """A sweep's failed job: its traceback in ``error.log``, ``"status": "failed"`` in ``metrics.json``, and one
    line in the log. A write the filesystem refused (a full disk, ...) leaves the job unfinished instead, not
    failed: once there is room, the same command continues it from its ``last.ckpt``. Called while handling ``err``.
    """
    out, job = Path(cfg.paths.output_dir), HydraConfig.get().job.num
    refused = console.write_refused(err)
    reason = user_error(err) or refused or err
    try:
        atomic_write(out / "error.log", traceback.format_exc())
        if not isinstance(err, RunFailed) and refused is None:  # a collapsed or diverged run wrote its own status
            write_metrics(cfg, {"status": "failed", "error": str(reason)})
    except WriteFailed as unwritten:  # the disk is full for the record too: the log line is all there is
        log.error("job %s failed: %s (%s)", job, reason, unwritten)
        return
    log.error("job %s failed: %s (traceback in %s)", job, reason, out / "error.log")


def main() -> None:
    """``python -m recursive_ae_gan.train``: bad input ends as one ``error:`` line."""
    console.run(hydra_main, console.MOVE_THE_RUN)
