"""DDP with 2 gloo processes on the CPU through the real CLI, on both data paths.

Each rank must train on its own share of every epoch's batches, in the single-process order (the game with R1's
double backward too), and the two shares together must be exactly the epoch's images; a DDP run resumes from its
last.ckpt; test metrics count every test image once; metrics.json and checkpoints are written once.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import run_cli, run_cli_forked

from recursive_ae_gan.data import ImageDataModule
from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder

RECORD = "+callbacks.record._target_=tests.recorders.RecordBatches"
COMMON = ("collapse_threshold=0", "data.batch_size=8", "data.train_size=48", "data.test_size=31")


def recorded(path: Path) -> list:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def single_process(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    """The single-process run's batches: the order DDP must share out (trained in a forked child)."""
    out = tmp_path_factory.mktemp("single")
    record = [RECORD, f"+callbacks.record.path={out / 'b'}"]
    process = run_cli_forked(data_root, out, *COMMON, "trainer.max_epochs=2", *record)
    assert process.returncode == 0, process.stderr[-3000:]
    return recorded(out / "b" / "rank0.json")


@pytest.mark.parametrize(("path", "model"), [("false", "ae"), ("true", "rae_gan")])
def test_ddp_ranks_share_each_epoch_and_resume(
    data_root: Path, tmp_path: Path, single_process: list, path: str, model: str
) -> None:
    run = tmp_path / "run"
    # The game with Lightning's own spelling (trainer.strategy=ddp: train() adds find_unused_parameters for it).
    strategy = "trainer=ddp" if model == "ae" else "trainer.strategy=ddp"
    ddp = [strategy, "trainer.devices=2", f"data.on_device={path}", f"model={model}", f"hydra.run.dir={run}"]
    ddp += ["model.warmup_epochs=1", "model.r1_gamma=1"] if model == "rae_gan" else []  # R1: a double backward
    # On the DataLoader path: 1 epoch, then resume from its last.ckpt to 2; on the device: 2 epochs at once.
    resume = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    for epochs, more in [(1, []), (2, resume)] if path == "false" else [(2, [])]:
        record = [RECORD, f"+callbacks.record.path={tmp_path / f'epochs{epochs}'}"]
        process = run_cli(data_root, tmp_path, *COMMON, *ddp, f"trainer.max_epochs={epochs}", *record, *more)
        assert process.returncode == 0, process.stderr[-5000:]
    for epoch in (0, 1):
        folder = tmp_path / (f"epochs{epoch + 1}" if path == "false" else "epochs2")
        ranks = [recorded(folder / f"rank{r}.json") for r in (0, 1)]
        single = [keys for e, _, keys in single_process if e == epoch]  # 6 batches of 8
        shares = [[keys for e, _, keys in rank if e == epoch] for rank in ranks]
        assert [len(s) for s in shares] == [3, 3]  # each rank: half the batches
        assert shares[0] == single[0::2] and shares[1] == single[1::2]  # the single-process order, dealt out
        images = [key for share in shares for keys in share for key in keys]
        assert len(images) == len(set(images)) == 48  # disjoint, and together every training image once

    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "last.ckpt"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3 + 3 * (2 if model == "rae_gan" else 1)  # the game steps twice a batch
    # The test metrics of 2 ranks (31 images: 16 and 15) are those of one process testing the final weights.
    metrics = json.loads((run / "metrics.json").read_text())
    module = AdversarialAutoencoder if model == "rae_gan" else RecursiveAutoencoder
    final = module.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    datamodule = ImageDataModule(**{**last["datamodule_hyper_parameters"], "on_device": False})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (single_test,) = trainer.test(final, datamodule=datamodule, verbose=False)
    assert metrics["status"] == "ok"
    for name in ("test/loss", "test/step_0/mse", "test/step_0/ssim"):
        assert metrics[name] == pytest.approx(single_test[name], rel=1e-5), name
