"""Train, then test, one model: ``python -m recursive_ae_gan.train model=rae_gan data=cifar10``.

Composes ``conf/train.yaml``, instantiates the datamodule, model, callbacks, loggers and
trainer, fits, tests the final weights, and writes ``metrics.json`` into the run directory.
Sweeps: ``python -m recursive_ae_gan.train -m data=mnist,cifar10 model=ae,rae model.recursion_depth=0,1,2``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from recursive_ae_gan.errors import UserError

log = logging.getLogger(__name__)


class CollapsedRunError(UserError):
    """The trained network outputs (nearly) the same image for every input."""


def user_error(err: BaseException) -> UserError | None:
    """The UserError behind ``err``, if any (Hydra's instantiate wraps what constructors raise)."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err


def train(cfg: DictConfig) -> dict:
    """Fit and test the configured model; returns what it writes to ``metrics.json``.

    ``score`` is the headline metric: the test reconstruction loss of step 0.
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    trainer.test(model, datamodule=datamodule)  # the final weights, as the report tests them
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")}

    score_name = f"test/step_0/{model.loss_name}"
    for logger in trainer.loggers:  # TensorBoard's HParams tab: the real metric, not a placeholder
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams({**datamodule.hparams, **model.hparams}, metrics={"hp_metric": metrics[score_name]})
    variation = metrics["test/step_0/variation"]
    collapsed = not variation >= cfg.collapse_threshold  # NaN counts as collapsed
    status = "collapsed" if collapsed else "ok"
    result = {"status": status, "score_name": score_name, "score": metrics[score_name], **metrics}
    Path(cfg.paths.output_dir, "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if collapsed:
        raise CollapsedRunError(
            f"the model collapsed: its test reconstructions vary {variation:.3f}x as much as the inputs "
            f"(threshold collapse_threshold={cfg.collapse_threshold}); try a lower model.lr or another seed"
        )
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the headline test metric for sweepers."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return train(cfg)["score"]
    except Exception as err:
        if not multirun:
            if reason := user_error(err):
                print(f"error: {reason}", file=sys.stderr)
                sys.exit(1)
            raise
        # One failed trial must not end the sweep: record why, and go on with the next job.
        out = Path(cfg.paths.output_dir)
        (out / "error.log").write_text(traceback.format_exc())
        if not (out / "metrics.json").exists():
            (out / "metrics.json").write_text(json.dumps({"status": "failed", "error": str(err)}, indent=2) + "\n")
        log.error("job %s failed: %s (traceback in %s)", HydraConfig.get().job.num, err, out / "error.log")
        return math.nan


if __name__ == "__main__":
    main()
