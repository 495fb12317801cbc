"""Test a run on more recursion steps: ``python -m recursive_ae_gan.evaluate ckpt_path=RUN/checkpoints/last.ckpt``.

Rebuilds the run's datamodule and model from its composed config (``RUN/.hydra/config.yaml``), with
``eval_depth=eval.max_depth`` (default: the trained depth + 3), loads the checkpoint's weights and tests
steps 0..max_depth. Writes, next to the checkpoint, ``eval.json`` (the ``test/...`` metrics, keyed as in
``metrics.json``) and ``eval.png`` (the first test images, then one row per step), and prints one row per
step. Data overrides apply on top of the run's data config: ``data.root=/elsewhere data.test_size=null``.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from recursive_ae_gan.callbacks import reconstruction_grid
from recursive_ae_gan.errors import UserError
from recursive_ae_gan.report import STEP_METRICS, format_value, markdown_table
from recursive_ae_gan.train import user_error

GAME_METRICS = ("fool_rate", "d_fake_mean")  # adversarial models only


def run_dir_of(ckpt: Path) -> Path:
    """The run that wrote ``ckpt``: its nearest parent folder holding ``.hydra/config.yaml``."""
    for folder in ckpt.resolve().parents:
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder
    raise UserError(
        f"no run config (.hydra/config.yaml) in any folder above {ckpt}; ckpt_path must be a checkpoint "
        f"inside a training run's directory, e.g. outputs/runs/X/checkpoints/last.ckpt"
    )


def load_checkpoint(ckpt: Path) -> dict:
    """A Lightning checkpoint's contents, on the CPU."""
    try:
        # weights_only=False: a run's own checkpoint; runs from before model._convert_=all hold OmegaConf lists.
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UserError(f"{ckpt} is not a readable checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{ckpt} holds no state_dict: not a Lightning checkpoint")
    return checkpoint


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
    state_dict = load_checkpoint(ckpt)["state_dict"]
    # A root-level merge keeps the run's interpolations (data.root: ${paths.data_dir}) resolvable;
    # ??? values in cfg.data do not replace the run's.
    run_cfg = OmegaConf.merge(OmegaConf.load(run / ".hydra" / "config.yaml"), {"data": cfg.data})
    depth = run_cfg.model.recursion_depth
    max_depth = depth + 3 if cfg.eval.max_depth is None else cfg.eval.max_depth
    if max_depth < depth:
        raise UserError(f"eval.max_depth={max_depth} is below the run's model.recursion_depth={depth}; raise it")

    datamodule: L.LightningDataModule = instantiate(run_cfg.data)
    model: L.LightningModule = instantiate(run_cfg.model, eval_depth=max_depth)
    model.load_state_dict(state_dict)
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
        "test/bce_floor": bce_floor(datamodule.splits["test"]),
        **{k: float(v) for k, v in sorted(tested.items()) if k.startswith("test/")},
    }
    (ckpt.parent / "eval.json").write_text(json.dumps(result, indent=2) + "\n")

    images = datamodule.splits["test"][: cfg.eval.num_images]  # uint8 (B, C, H, W)
    images = datamodule.on_after_batch_transfer(images.to(model.device), 0)
    save_image(reconstruction_grid(model, images, max_depth), ckpt.parent / "eval.png")
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: evaluate, then print the per-step table."""
    try:
        result = evaluate(cfg)
    except Exception as err:
        if reason := user_error(err):
            print(f"error: {reason}", file=sys.stderr)
            sys.exit(1)
        raise
    print(step_table(result))
    print(f"* trained steps; BCE floor of these test images (their pixels' entropy): {result['test/bce_floor']:.4f}")
    if "test/d_real_acc" in result:
        print(f"discriminator accuracy on real test images: {result['test/d_real_acc']:.4f}")
    print(f"wrote {Path(result['ckpt_path']).parent / 'eval.json'} and eval.png")


if __name__ == "__main__":
    main()
