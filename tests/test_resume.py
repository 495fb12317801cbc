"""Exact mid-epoch resume: a run interrupted in the middle of an epoch and resumed from that checkpoint
ends with the same weights as an uninterrupted run, on every data path and for the adversarial model.

The loaders are stateful (``state_dict`` / ``load_state_dict``): Lightning saves their position in the
checkpoint and the resumed epoch continues with the next batch of the same order.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from image_folders import write_image_folder
from lightning.pytorch.callbacks import ModelCheckpoint
from recorders import image_keys

PATHS = {
    "in_memory": ["data.on_device=false"],
    "on_device": ["data.on_device=true"],
    "streaming": ["data=folder", "data.image_size=16", "data.in_memory=false", "data.num_workers=1",
                  "data.val_size=8", "data.test_size=8", "data.train_size=24", "data.batch_size=8"],
}  # fmt: skip


class Batches(L.Callback):
    def __init__(self) -> None:
        self.keys: list[tuple[int, list[str]]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: torch.Tensor, batch_idx: int) -> None:
        self.keys.append((trainer.current_epoch, image_keys(batch)))


def fit(cfg, callbacks: list, ckpt_path: Path | None = None) -> tuple[L.LightningModule, Batches]:
    L.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    L.seed_everything(cfg.seed)
    model = instantiate(cfg.model, image_shape=list(datamodule.image_shape))
    batches = Batches()
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, batches], logger=False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, batches


@pytest.mark.parametrize(
    ("path", "model"), [("in_memory", "ae"), ("on_device", "rae"), ("streaming", "ae"), ("in_memory", "rae_gan")]
)
def test_mid_epoch_resume_equals_an_uninterrupted_run(compose_cfg, tmp_path: Path, path: str, model: str) -> None:
    folder = write_image_folder(tmp_path / "images")
    extra = [f"data.root={folder}"] if path == "streaming" else []
    game = ["model.warmup_epochs=1", "model.recursion_depth=1"] if model == "rae_gan" else []
    cfg = compose_cfg(f"model={model}", *PATHS[path], *extra, *game, "trainer.max_epochs=3",
                      "trainer.num_sanity_val_steps=0", "trainer.enable_checkpointing=true")  # fmt: skip
    # A checkpoint after the first batch of the second epoch (n batches an epoch; the game, after its
    # warm-up epoch, steps the optimizers twice a batch).
    n = 3 if path == "streaming" else 4
    step = n + (2 if model == "rae_gan" else 1)
    every = ModelCheckpoint(tmp_path / "ckpt", filename="{step}", every_n_train_steps=step, save_top_k=-1)
    straight, straight_batches = fit(cfg, [every])
    assert [epoch for epoch, _ in straight_batches.keys] == [0] * n + [1] * n + [2] * n
    mid_epoch = tmp_path / "ckpt" / f"step={step}.ckpt"
    state = torch.load(mid_epoch, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # mid-epoch, stateful

    resumed, resumed_batches = fit(cfg, [], ckpt_path=mid_epoch)
    assert resumed_batches.keys == straight_batches.keys[n + 1 :]  # the next batch of the same order, then on
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
