"""Train, then test, one model: ``python -m recursive_ae_gan.train model=rae_gan data=cifar10``.

Composes ``conf/train.yaml``, checks it (``config.check``), instantiates the datamodule, callbacks,
loggers and trainer, loads the data (its image shape sizes the networks), builds the model, fits,
tests the final weights, and writes ``metrics.json`` into the run directory (rank 0 only).
Sweeps: ``python -m recursive_ae_gan.train -m data=mnist,cifar10 model=ae,rae model.recursion_depth=0,1,2``.
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
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from recursive_ae_gan import cli
from recursive_ae_gan.checkpoints import check_fits, read_checkpoint
from recursive_ae_gan.config import check
from recursive_ae_gan.errors import CollapsedRunError, RunFailed, user_error
from recursive_ae_gan.sweeps import objective, pin_job_to_gpu

log = logging.getLogger(__name__)


def write_metrics(cfg: DictConfig, result: dict) -> None:
    Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(result, indent=2) + "\n")


def train(cfg: DictConfig) -> dict:
    """Fit and test the configured model; returns what it writes to ``metrics.json``.

    ``score`` is the headline metric: the test reconstruction loss of step 0.
    """
    check(cfg)  # types, ranges and unknown keys, before any data is loaded or any model built
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.local_rank == 0:  # other DDP ranks start later, in fit, and find the data in place
        datamodule.prepare_data()
    datamodule.setup("fit")
    L.seed_everything(cfg.seed, workers=True)  # the weights' initialisation
    model: L.LightningModule = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    ckpt_path = cfg.ckpt_path and Path(cfg.ckpt_path).expanduser()
    if ckpt_path:  # a one-line error for a missing, unreadable or mismatched checkpoint, before fit
        check_fits(read_checkpoint(ckpt_path), model, ckpt_path)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except RunFailed as err:
        if trainer.is_global_zero:
            write_metrics(cfg, {"status": err.status, "error": str(err)})
        raise
    validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}  # the last epoch's
    trainer.test(model, datamodule=datamodule)  # the final weights, as the report tests them
    tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics = dict(sorted((validated | tested).items()))

    score_name = f"test/step_0/{model.loss_name}"
    variation = metrics["test/step_0/variation"]
    collapsed = not variation >= cfg.collapse_threshold  # NaN counts as collapsed
    result = {"status": "collapsed" if collapsed else "ok", "score_name": score_name, "score": metrics[score_name]}
    result |= metrics
    if trainer.is_global_zero:
        for logger in trainer.loggers:  # TensorBoard's HParams tab: the real metric, not a placeholder
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams({**datamodule.hparams, **model.hparams}, metrics={"hp_metric": result["score"]})
        write_metrics(cfg, result)
    if collapsed:
        raise CollapsedRunError(
            f"the model collapsed: its test reconstructions vary {variation:.3f}x as much as the inputs "
            f"(threshold collapse_threshold={cfg.collapse_threshold}); try a lower model.lr or another seed"
        )
    return result


@hydra.main(version_base="1.3", config_path=cli.CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's task: train; returns ``optimized_metric`` (null: ``score``) to sweepers, None for a failed job.

    None, not NaN: the Optuna sweeper records a value that is not a number as a failed trial and goes on,
    but crashes on NaN (``recursive_ae_gan/sweeps.py``, ``README, "Scaling out"``).
    """
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        with cli.one_line_errors():  # here, not only around Hydra, which would add a line of its own
            return objective(train(cfg), cfg.optimized_metric)
    pin_job_to_gpu(HydraConfig.get())  # hydra/launcher=gpus: one GPU per job, before anything touches CUDA
    try:
        return objective(train(cfg), cfg.optimized_metric)
    except Exception as err:  # one failed job must not end the sweep: record why, go on with the next
        out = Path(cfg.paths.output_dir)
        (out / "error.log").write_text(traceback.format_exc())
        if not isinstance(err, RunFailed):  # a collapsed or diverged run has written its own status
            write_metrics(cfg, {"status": "failed", "error": str(user_error(err) or err)})
        log.error("job %s failed: %s (traceback in %s)", HydraConfig.get().job.num, err, out / "error.log")
        return None


def main() -> None:
    """``python -m recursive_ae_gan.train``: bad input ends as one ``error:`` line."""
    cli.run(hydra_main)


if __name__ == "__main__":
    main()
