"""The loaders (``data/loaders.py``): the batch sampler (a seeded order, the ranks' shares, no batch of one
image), the epoch it draws and its state, through the CLI too (``overfit_batches``, a last batch of one).

Exact mid-epoch resume: a run interrupted in the middle of an epoch and resumed from that checkpoint
ends with the same weights as an uninterrupted run, on every data path and for the adversarial model.
The loaders are stateful (``state_dict`` / ``load_state_dict``): Lightning saves their position in the
checkpoint and the resumed epoch continues with the next batch of the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ONE_EPOCH, make_datamodule, ok, run_cli_forked, write_image_folder
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from recorders import image_keys

from recursive_ae_gan.data import BatchIndexSampler

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


def test_sampler_batches() -> None:
    sampler = BatchIndexSampler(10, 4, shuffle=False)
    assert [b.tolist() for b in sampler] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(sampler) == 3
    # Training keeps the short last batch (no drop_last): every image once per epoch, in a seeded order.
    shuffled = BatchIndexSampler(10, 4, shuffle=True, seed=1)
    assert [len(b) for b in shuffled] == [4, 4, 2] and len(shuffled) == 3
    assert sorted(torch.cat(list(shuffled)).tolist()) == list(range(10))
    assert torch.equal(torch.cat(list(shuffled)), torch.cat(list(BatchIndexSampler(10, 4, shuffle=True, seed=1))))
    assert not torch.equal(torch.cat(list(shuffled)), torch.cat(list(BatchIndexSampler(10, 4, shuffle=True, seed=2))))


@pytest.mark.parametrize("on_device", [False, True])
def test_epoch_set_after_iter_decides_the_order(data_root: Path, on_device: bool) -> None:
    """Resuming, Lightning creates the train iterator before it sets the epoch (FitLoop.setup_data
    calls ``iter`` first): the epoch's order must be drawn at the first batch, not at ``iter``."""
    reference = make_datamodule(data_root, on_device=on_device).train_dataloader()
    reference.sampler.set_epoch(3)
    expected = list(reference)
    loader = make_datamodule(data_root, on_device=on_device).train_dataloader()
    iterator = iter(loader)
    loader.sampler.set_epoch(3)
    for batch, expected_batch in zip(iterator, expected, strict=True):
        assert torch.equal(batch, expected_batch)


def test_ranks_share_training_batches_round_robin_and_wrap_when_uneven() -> None:
    """7 batches over 3 ranks: 3 each, the last round wraps to the epoch's first batches (DDP steps evenly)."""
    single = [b.tolist() for b in BatchIndexSampler(26, 4, shuffle=True, seed=2)]  # 7 batches, the last of 2
    shares = [
        [b.tolist() for b in BatchIndexSampler(26, 4, shuffle=True, seed=2, rank=r, world_size=3)] for r in range(3)
    ]
    assert [len(s) for s in shares] == [3, 3, 3]
    padded = single + single[:2]
    assert shares == [padded[r::3] for r in range(3)]
    assert len(BatchIndexSampler(26, 4, shuffle=True, rank=1, world_size=3)) == 3


def test_ranks_split_evaluation_images_once_without_padding() -> None:
    shares = [torch.cat(list(BatchIndexSampler(11, 2, shuffle=False, rank=r, world_size=3))).tolist() for r in range(3)]
    assert sum(shares, []) == list(range(11))  # every image exactly once, in order
    assert [len(BatchIndexSampler(11, 2, shuffle=False, rank=r, world_size=3)) for r in range(3)] == [2, 2, 2]


def test_loader_state_resumes_within_its_epoch_only(data_root: Path) -> None:
    loader = make_datamodule(data_root, seed=5).train_dataloader()
    loader.sampler.set_epoch(2)
    full = list(loader)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_done": 2}
    resumed = make_datamodule(data_root, seed=5).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:], strict=True))
    end_of_epoch = resumed.state_dict()
    assert end_of_epoch == {"epoch": 2, "batches_done": len(full)}
    after_end = make_datamodule(data_root, seed=5).train_dataloader()
    after_end.load_state_dict(end_of_epoch)
    after_end.sampler.set_epoch(3)  # a state saved at an epoch's end does not skip any of the next epoch
    assert len(list(after_end)) == len(full)


RECORD = "+callbacks.record._target_=recorders.RecordBatches"  # recorders is importable in the forked child


def test_overfit_batches_trains_on_the_first_batches_every_epoch(compose_cfg, data_root: Path, tmp_path: Path) -> None:
    record = tmp_path / "batches"
    ok(run_cli_forked(data_root, tmp_path, "trainer.overfit_batches=2", "trainer.max_epochs=2", "collapse_threshold=0",
                      RECORD, f"+callbacks.record.path={record}"))  # fmt: skip
    seen = json.loads((record / "rank0.json").read_text())
    datamodule = instantiate(compose_cfg().data)
    datamodule.setup("fit")
    first = [image_keys(batch.float() / 255) for batch in datamodule.images("train", 32).split(16)]
    assert [(epoch, index) for epoch, index, _ in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [keys for _, _, keys in seen] == first + first  # the split's first 2 batches, in order, both epochs


def test_no_training_batch_is_a_single_image(data_root: Path, tmp_path: Path) -> None:
    """49 images in batches of 16: 16, 16, 17 (BatchNorm cannot normalise a batch of one)."""
    record = tmp_path / "batches"
    ok(
        run_cli_forked(
            data_root, tmp_path, "data.train_size=49", *ONE_EPOCH, RECORD, f"+callbacks.record.path={record}"
        )
    )
    seen = json.loads((record / "rank0.json").read_text())
    assert sorted(len(keys) for _, _, keys in seen) == [16, 16, 17]
    assert len({key for _, _, keys in seen for key in keys}) == 49


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size"), [(49, 16, 1), (49, 16, 2), (33, 16, 2), (17, 16, 3), (16, 16, 1), (3, 1, 2)]
)
def test_the_sampler_merges_a_last_batch_of_one(n: int, batch_size: int, world_size: int) -> None:
    shares = [list(BatchIndexSampler(n, batch_size, shuffle=True, seed=3, rank=r, world_size=world_size))
              for r in range(world_size)]  # fmt: skip
    assert len({len(share) for share in shares}) == 1  # DDP: every rank steps equally often
    assert all(len(share) == len(BatchIndexSampler(n, batch_size, True, rank=r, world_size=world_size))
               for r, share in enumerate(shares))  # fmt: skip
    sizes = [len(batch) for share in shares for batch in share]
    assert 1 not in sizes or batch_size == 1  # batch_size=1 is every batch of one image, as asked
    epoch = torch.cat([batch for share in shares for batch in share]).tolist()
    assert set(epoch) == set(range(n))  # every image, the wrapped-around ones twice
