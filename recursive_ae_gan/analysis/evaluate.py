"""Test a run on more recursion steps: ``python -m recursive_ae_gan.evaluate ckpt_path=RUN/checkpoints/last.ckpt``.

Rebuilds the run's datamodule from its config (``RUN/.hydra/config.yaml``; data overrides apply on top, e.g.
``data.root=/elsewhere``) and the trained model from its checkpoint (``run.trained``), tests steps
0..``eval.max_depth`` (default: the trained depth + 3), prints one row per step, and writes ``eval.json`` (the
``test/...`` metrics, keyed as in ``metrics.json``) and ``eval.png`` (test images, then a row per step) beside the
checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from recursive_ae_gan.analysis.realism_tables import panel_table
from recursive_ae_gan.analysis.tables import format_value, markdown_table
from recursive_ae_gan.compat import upgrade_old_run_config
from recursive_ae_gan.core import console
from recursive_ae_gan.core.atomic import atomic_open, atomic_write
from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.core.keys import step_key
from recursive_ae_gan.core.records import RUN_CONFIG_KEYS, read_config
from recursive_ae_gan.models.feature_distances import feature_network, kid_fid
from recursive_ae_gan.models.metrics import reported_metrics
from recursive_ae_gan.models.realism import realism
from recursive_ae_gan.run.callbacks import reconstruction_grid
from recursive_ae_gan.run.checkpoints import check_exists
from recursive_ae_gan.run.config import check_realism
from recursive_ae_gan.run.trained import Trained, read_trained, run_dir_of

GAME_METRICS = ("fool_rate", "d_fake_mean", "d_auc", "d_balanced_acc")  # adversarial models only
JUDGE_METRICS = ("judge_acc", "judge_auc", "judge_p", "judge_converged")  # the panel's verdict on realism
FEATURE_METRICS = ("kid", "fid")  # kid_fid=default: Inception feature distances


def bce_floor(images: torch.Tensor) -> float:
    """The least mean BCE any reconstruction can reach on uint8 ``images``: the pixels' own binary entropy."""
    p = images.float() / 255
    return float((torch.special.entr(p) + torch.special.entr(1 - p)).mean(dtype=torch.float64))


def run_config(ckpt: Path, data: DictConfig) -> DictConfig:
    """The config of the run that wrote ``ckpt``, in today's form, with the data overrides given.

    Only the data keys the user set (the rest are ???) replace the run's, so a run whose own data config lacks a key
    (a user's config file need not list every argument) keeps its default. A root-level merge keeps the run's
    interpolations (data.root: ${paths.data_dir}) resolvable."""
    run = run_dir_of(ckpt)
    run_cfg = upgrade_old_run_config(read_config(run / ".hydra" / "config.yaml", RUN_CONFIG_KEYS))
    given = {key: data[key] for key in data if not OmegaConf.is_missing(data, key)}
    return OmegaConf.merge(run_cfg, {"data": given})


def evaluation_data(run_cfg: DictConfig, trained: Trained) -> L.LightningDataModule:
    """The run's test images, set up; a one-line error when they are not the images the model was trained on."""
    datamodule: L.LightningDataModule = instantiate(run_cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    shape = list(datamodule.image_shape)
    if trained.image_shape is not None and trained.image_shape != shape:
        raise UserError(
            f"the data gives {'x'.join(map(str, shape))} images, but {trained.path} was trained on "
            f"{'x'.join(map(str, trained.image_shape))} ones; drop the data overrides that change the images"
        )
    return datamodule


def evaluate(cfg: DictConfig) -> dict:
    """Test ``cfg.ckpt_path`` on steps 0..max_depth; returns what it writes to ``eval.json``."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise UserError("no checkpoint given: add ckpt_path=outputs/runs/X/checkpoints/last.ckpt")
    test_cfg = check_realism(cfg.realism) if cfg.get("realism") is not None else None  # before any work
    ckpt = Path(cfg.ckpt_path).expanduser()
    check_exists(ckpt)  # before its run directory is looked for
    run_cfg = run_config(ckpt, cfg.data)
    trained = read_trained(ckpt, run_cfg)
    depth = trained.recursion_depth
    max_depth = trained.default_depth if cfg.eval.max_depth is None else cfg.eval.max_depth
    if max_depth < depth:
        raise UserError(f"eval.max_depth={max_depth} is below the run's model.recursion_depth={depth}; raise it")
    distances = instantiate(cfg.kid_fid) if cfg.get("kid_fid") is not None else None
    network = feature_network(distances) if distances is not None else None  # offline: one line, before testing
    datamodule = evaluation_data(run_cfg, trained)
    model = trained.model(max_depth, list(datamodule.image_shape))
    trainer = L.Trainer(
        accelerator=cfg.eval.accelerator,
        devices=1,
        precision=cfg.eval.precision or run_cfg.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.seed_everything(cfg.eval.seed, verbose=False)  # a stochastic decoder's draws
    (tested,) = trainer.test(model, datamodule=datamodule, verbose=False)
    if test_cfg is not None:  # a panel of fresh judges per step: the slow part, a log line per judge
        judge_accelerator = "gpu" if trainer.strategy.root_device.type == "cuda" else "cpu"
        images = {split: datamodule.images(split) for split in ("train", "test")}
        tested |= realism(model, images["train"], images["test"], max_depth, test_cfg, judge_accelerator)
    if distances is not None:
        tested |= kid_fid(model, datamodule.images("test"), max_depth, distances, network, trainer.strategy.root_device)
    result = {
        "ckpt_path": str(ckpt.resolve()),
        "run_dir": str(run_dir_of(ckpt)),
        "recursion_depth": depth,
        "max_depth": max_depth,
        "score_name": step_key("test", 0, model.loss_name),
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
    """One markdown row per recursion step; ``*`` marks the steps the model was trained on. The judge's accuracy
    shows its 95% interval, KID its standard deviation over subsets."""
    metrics = (*reported_metrics(), *GAME_METRICS, *JUDGE_METRICS, *FEATURE_METRICS)
    names = [m for m in metrics if step_key("test", 0, m) in result]
    rows = []
    for step in range(result["max_depth"] + 1):
        values = {name: format_value(result.get(step_key("test", step, name))) for name in names}
        if "judge_acc" in values and (low := result.get(step_key("test", step, "judge_acc_low"))) is not None:
            values["judge_acc"] += f" [{low:.3f}, {result[step_key('test', step, 'judge_acc_high')]:.3f}]"
        if "kid" in values:
            values["kid"] += f" ± {format_value(result[step_key('test', step, 'kid_std')])}"
        rows.append([f"{step}{'*' if step <= result['recursion_depth'] else ''}", *values.values()])
    return markdown_table(["step", *names], rows)


@hydra.main(version_base="1.3", config_path=console.CONF_DIR, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra's task: evaluate, then print the per-step table."""
    with console.one_line_errors():  # here, not only around Hydra, which would add a line of its own
        result = evaluate(cfg)
    print(step_table(result))
    print(f"* trained steps; BCE floor of these test images (their pixels' entropy): {result['test/bce_floor']:.4f}")
    if "test/d_real_acc" in result:
        print(f"discriminator accuracy on real test images: {result['test/d_real_acc']:.4f}; d_auc, d_balanced_acc: "
              "its skill at telling each step from real images, apart from its bias")  # fmt: skip
    if step_key("test", 0, "judge_acc") in result:
        print("judge_acc: the panel's verdict, its strongest judge's accuracy at telling each step's reconstructions "
              "from real test images [95% interval]; 0.5 is chance, judge_p its one-sided p-value Holm-corrected "
              "over the panel. Each judge:")  # fmt: skip
        print(panel_table(result))
    if step_key("test", 0, "fid") in result:
        print("kid (± its std over subsets), fid: Inception feature distances of each step's reconstructions from "
              "the real test images; 0: alike (docs/evaluation.md: FID is biased at small n, KID is not)")  # fmt: skip
    print(f"wrote {Path(result['ckpt_path']).parent / 'eval.json'} and eval.png")


def main() -> None:
    """``python -m recursive_ae_gan.evaluate``: bad input ends as one ``error:`` line."""
    console.run(hydra_main)
