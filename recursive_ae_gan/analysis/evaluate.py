"""Test a run on more recursion steps: ``python -m recursive_ae_gan.evaluate ckpt_path=RUN/checkpoints/last.ckpt``.

Rebuilds the run's datamodule and model from its composed config (``RUN/.hydra/config.yaml``; a run from
before the networks were built from the image shape is read through ``upgrade_old_run_config``), with
``eval_depth=eval.max_depth`` (default: the trained depth + 3), loads the checkpoint's weights and tests
steps 0..max_depth. Writes, next to the checkpoint, ``eval.json`` (the ``test/...`` metrics, keyed as in
``metrics.json``) and ``eval.png`` (the first test images, then one row per step), and prints one row per
step. Data overrides apply on top of the run's data config: ``data.root=/elsewhere data.test_size=null``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.utils import save_image

from recursive_ae_gan.analysis.report import STEP_METRICS, format_value, markdown_table
from recursive_ae_gan.errors import UserError
from recursive_ae_gan.run import console
from recursive_ae_gan.run.atomic import atomic_open, atomic_write
from recursive_ae_gan.run.callbacks import reconstruction_grid
from recursive_ae_gan.run.checkpoints import check_fits, read_checkpoint

GAME_METRICS = ("fool_rate", "d_fake_mean")  # adversarial models only

# What runs from before the data package and shape-built networks wrote into their config.
OLD_DATASETS = {"mnist": "torchvision.datasets.MNIST", "cifar10": "torchvision.datasets.CIFAR10"}
OLD_AUTOENCODER = "recursive_ae_gan.networks.autoencoder_for"


def upgrade_old_run_config(run_cfg: DictConfig) -> DictConfig:
    """An old run's config in today's form; today's configs come back as they are.

    Old runs named their dataset (``data.dataset: mnist | cifar10``) and built the report's networks from
    that name (``networks.autoencoder_for`` / ``networks.discriminator_for``, which the model received
    built). Today ``data.dataset`` is a torchvision class with its training and test pools, and the model
    builds its networks from their configs and the data's image shape. The report's networks, and so the
    checkpoints' state_dict keys, are the same.
    """
    data, model = run_cfg.data, run_cfg.model
    old_data, old_model = data.get("dataset") in OLD_DATASETS, model.net.get("_target_") == OLD_AUTOENCODER
    if not (old_data or old_model):
        return run_cfg
    cfg = copy.deepcopy(run_cfg)
    with open_dict(cfg):
        if old_data:
            cfg.data.dataset = OLD_DATASETS[data.dataset]
            cfg.data.train_split, cfg.data.test_split = {"train": True}, {"train": False}
        if old_model:
            cfg.model.net = {"_target_": "recursive_ae_gan.networks.report_autoencoder"}
            if "discriminator" in model:
                hidden = {"hidden": model.discriminator.hidden} if "hidden" in model.discriminator else {}
                cfg.model.discriminator = {"_target_": "recursive_ae_gan.networks.MLPDiscriminator", **hidden}
            cfg.model._recursive_, cfg.model._convert_ = False, "all"  # the model builds its networks
    return cfg


def run_dir_of(ckpt: Path) -> Path:
    """The run that wrote ``ckpt``: its nearest parent folder holding ``.hydra/config.yaml``."""
    for folder in ckpt.resolve().parents:
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder
    raise UserError(
        f"no run config (.hydra/config.yaml) in any folder above {ckpt}; ckpt_path must be a checkpoint "
        f"inside a training run's directory, e.g. outputs/runs/X/checkpoints/last.ckpt"
    )


def bce_floor(images: torch.Tensor) -> float:
    """The least mean BCE any reconstruction can reach on uint8 ``images``: the pixels' own binary entropy."""
    p = images.float() / 255
    return float((torch.special.entr(p) + torch.special.entr(1 - p)).mean(dtype=torch.float64))


def evaluate(cfg: DictConfig) -> dict:
    """Test ``cfg.ckpt_path`` on steps 0..max_depth; returns what it writes to ``eval.json``."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise UserError("no checkpoint given: add ckpt_path=outputs/runs/X/checkpoints/last.ckpt")
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}; set ckpt_path to a run's checkpoints/*.ckpt file")
    run = run_dir_of(ckpt)
    run_cfg = upgrade_old_run_config(OmegaConf.load(run / ".hydra" / "config.yaml"))
    checkpoint = read_checkpoint(ckpt, trusted=str(run_cfg.model.get("_target_")).startswith("recursive_ae_gan."))
    # Only the data keys the user set (the rest are ???) replace the run's, so a run whose own data config
    # lacks a key (a user's config file need not list every argument) keeps its default. A root-level merge
    # keeps the run's interpolations (data.root: ${paths.data_dir}) resolvable.
    given = {key: cfg.data[key] for key in cfg.data if not OmegaConf.is_missing(cfg.data, key)}
    run_cfg = OmegaConf.merge(run_cfg, {"data": given})
    depth = run_cfg.model.recursion_depth
    max_depth = depth + 3 if cfg.eval.max_depth is None else cfg.eval.max_depth
    if max_depth < depth:
        raise UserError(f"eval.max_depth={max_depth} is below the run's model.recursion_depth={depth}; raise it")

    datamodule: L.LightningDataModule = instantiate(run_cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    image_shape = list(datamodule.image_shape)
    trained_shape = checkpoint.get("hyper_parameters", {}).get("image_shape")  # absent in old checkpoints
    if trained_shape is not None and list(trained_shape) != image_shape:
        raise UserError(
            f"the data gives {'x'.join(map(str, image_shape))} images, but {ckpt} was trained on "
            f"{'x'.join(map(str, trained_shape))} ones; drop the data overrides that change the images"
        )
    model: L.LightningModule = instantiate(run_cfg.model, image_shape=image_shape, eval_depth=max_depth)
    check_fits(checkpoint, model, ckpt)
    model.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.eval.accelerator,
        devices=1,
        precision=cfg.eval.precision or run_cfg.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (tested,) = trainer.test(model, datamodule=datamodule, verbose=False)

    result = {
        "ckpt_path": str(ckpt.resolve()),
        "run_dir": str(run),
        "recursion_depth": depth,
        "max_depth": max_depth,
        "score_name": f"test/step_0/{model.loss_name}",
        "test/bce_floor": bce_floor(datamodule.images("test")),
        **{k: float(v) for k, v in sorted(tested.items()) if k.startswith("test/")},
    }
    atomic_write(ckpt.parent / "eval.json", json.dumps(result, indent=2) + "\n")

    images = datamodule.images("test", cfg.eval.num_images)  # uint8 (B, C, H, W), on either data path
    images = datamodule.on_after_batch_transfer(images.to(model.device), 0)
    with atomic_open(ckpt.parent / "eval.png", "wb") as file:
        save_image(reconstruction_grid(model, images, max_depth), file, format="png")
    return result


def step_table(result: dict) -> str:
    """One markdown row per recursion step; ``*`` marks the steps the model was trained on."""
    names = [*STEP_METRICS, *(m for m in GAME_METRICS if f"test/step_0/{m}" in result)]
    rows = [
        [f"{step}{'*' if step <= result['recursion_depth'] else ''}"]
        + [format_value(result.get(f"test/step_{step}/{name}")) for name in names]
        for step in range(result["max_depth"] + 1)
    ]
    return markdown_table(["step", *names], rows)


@hydra.main(version_base="1.3", config_path=console.CONF_DIR, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra's task: evaluate, then print the per-step table."""
    with console.one_line_errors():  # here, not only around Hydra, which would add a line of its own
        result = evaluate(cfg)
    print(step_table(result))
    print(f"* trained steps; BCE floor of these test images (their pixels' entropy): {result['test/bce_floor']:.4f}")
    if "test/d_real_acc" in result:
        print(f"discriminator accuracy on real test images: {result['test/d_real_acc']:.4f}")
    print(f"wrote {Path(result['ckpt_path']).parent / 'eval.json'} and eval.png")


def main() -> None:
    """``python -m recursive_ae_gan.evaluate``: bad input ends as one ``error:`` line."""
    console.run(hydra_main)
