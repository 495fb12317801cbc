"""DDP with 2 gloo processes on the CPU through the real CLI, on both data paths.

Each rank must train on its own share of every epoch's batches, in the single-process order,
and the two shares together must be exactly the epoch's images; test metrics must count every
test image once; metrics.json and checkpoints are written once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import run_cli

RECORD = "+callbacks.record._target_=tests.recorders.RecordBatches"
COMMON = ("trainer.max_epochs=2", "collapse_threshold=0", "data.batch_size=8", "data.train_size=48")


def recorded(path: Path) -> list:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def single_process(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    """The single-process run's batches: the order DDP must share out."""
    out = tmp_path_factory.mktemp("single")
    process = run_cli(data_root, out, *COMMON, RECORD, f"+callbacks.record.path={out / 'batches'}")
    assert process.returncode == 0, process.stderr[-3000:]
    return recorded(out / "batches" / "rank0.json")


@pytest.mark.parametrize(
    ("path", "model"), [("data.on_device=false", "model=ae"), ("data.on_device=true", "model=rae_gan")]
)
def test_ddp_ranks_share_each_epoch(data_root: Path, tmp_path: Path, single_process: list, path: str, model: str):
    overrides = ["trainer=ddp", "trainer.devices=2", path, model, "model.warmup_epochs=1" if "gan" in model else ""]
    run = tmp_path / "run"
    process = run_cli(
        data_root, tmp_path, *COMMON, *filter(None, overrides), RECORD, f"+callbacks.record.path={tmp_path / 'b'}",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-5000:]
    ranks = [recorded(tmp_path / "b" / f"rank{r}.json") for r in (0, 1)]
    for epoch in (0, 1):
        single = [keys for e, _, keys in single_process if e == epoch]  # 6 batches of 8
        shares = [[keys for e, _, keys in rank if e == epoch] for rank in ranks]
        assert [len(s) for s in shares] == [3, 3]  # each rank: half the batches
        assert shares[0] == single[0::2] and shares[1] == single[1::2]  # the single-process order, dealt out
        images = [key for share in shares for keys in share for key in keys]
        assert len(images) == len(set(images)) == 48  # disjoint, and together every training image once
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and 0 < metrics["score"] < 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "last.ckpt"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps_per_batch = 2 if "gan" in model else 1  # the game makes two optimizer steps per batch (after warm-up)
    assert last["global_step"] == 3 + 3 * steps_per_batch
