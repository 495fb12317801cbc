"""The training options that are off by default: the EMA of the weights (``callbacks=ema``), horizontal flips
(``data.hflip``) and the recursion steps' loss weights (``model.step_weights``), each checked against an
independent computation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import CONF_DIR, data_and_model, write_image_folder
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recursive_ae_gan.analysis.evaluate import evaluate
from recursive_ae_gan.core.errors import DivergedError, UserError, user_error
from recursive_ae_gan.data.loaders import epoch_flips
from recursive_ae_gan.run.callbacks import EMA
from recursive_ae_gan.run.config import check
from recursive_ae_gan.run.train import train

DECAY = 0.6  # far from 1, so that a few steps move the average well away from the weights


class HostReads:
    """Counts the reads of a tensor's value on the host (``item``, ``bool``, ...: each a sync on a GPU) made
    inside ``counting()`` blocks, by any code."""

    READS = ("item", "__bool__", "__float__", "__int__", "tolist")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active, self.reads = False, []
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))

    def _counted(self, name: str, read):
        def counted(tensor: torch.Tensor, *args):
            if self.active:
                self.reads.append(name)
            return read(tensor, *args)

        return counted

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


class RecordWeights(L.Callback):
    """Saves to ``path`` the model's state after every training batch and the state validation sees."""

    def __init__(self, path: str) -> None:
        self.path, self.trained, self.validated = path, [], []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.trained.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int, *args) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            self.validated.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        torch.save({"trained": self.trained, "validated": self.validated}, self.path)


def hand_ema(trajectory: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The first state, then ``decay * average + (1 - decay) * state`` for each later one (integers: the last)."""
    average = dict(trajectory[0])
    for state in trajectory[1:]:
        average = {k: decay * average[k] + (1 - decay) * v if v.is_floating_point() else v for k, v in state.items()}
    return average


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def assert_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_ema_is_the_hand_computed_average_validated_tested_checkpointed_and_resumed(compose_cfg, tmp_path) -> None:
    """The game (manual optimization: one optimizer step a batch in its warm-up epoch, two after), with flips.
    4 batches an epoch; checkpoints after the first batch of epoch 1 (global step 4 + 2) and after the last (12)."""
    record = tmp_path / "weights.pt"
    game = ["model=ae_gan", "model.warmup_epochs=1", "trainer.max_epochs=2", "collapse_threshold=0",
            "callbacks=ema", f"callbacks.ema.decay={DECAY}", "data.hflip=true", "logger=csv"]  # fmt: skip
    mid = [f"+callbacks.mid.{k}" for k in ("_target_=lightning.pytorch.callbacks.ModelCheckpoint",
           f"dirpath={tmp_path / 'mid'}", "filename='step{step}'", "auto_insert_metric_name=false",
           "every_n_train_steps=6", "save_top_k=-1")]  # fmt: skip
    recorder = ["+callbacks.record._target_=test_training_options.RecordWeights", f"+callbacks.record.path={record}"]
    cfg = compose_cfg(*game, *mid, *recorder)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")  # a run directory, for evaluate
    result = train(cfg)

    weights = torch.load(record, weights_only=True)
    trained = weights["trained"]
    assert len(trained) == 8
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    average = hand_ema(trained, DECAY)
    assert_close(last["state_dict"], average)  # what evaluate and reconstruct load
    assert_equal(last["current_model_state"], trained[-1])  # what a resumed run trains on
    assert any(not torch.allclose(average[k], trained[-1][k], atol=1e-3) for k in average if "weight" in k)
    # Validation at each epoch's end scored the average of the weights so far.
    for validated, batches in zip(weights["validated"], (4, 8), strict=True):
        assert_close(validated, hand_ema(trained[:batches], DECAY))
    # The final test scored the average too: evaluate, which loads the checkpoint's state_dict, agrees.
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ckpt = tmp_path / "checkpoints" / "last.ckpt"
        evaluated = evaluate(compose("evaluate", [f"ckpt_path={ckpt}", "eval.accelerator=cpu", "eval.max_depth=0"]))
    for name in ("mse", "bce", "fool_rate"):
        assert evaluated[f"test/step_0/{name}"] == pytest.approx(result[f"test/step_0/{name}"], abs=1e-6), name

    # Resumed mid-epoch: the same average, weights and result as the uninterrupted run. Resumed after the last
    # batch (nothing left to train, so Lightning's on_train_end does not run): the test still scores the average.
    for step in (6, 12):
        resumed = compose_cfg(*game, f"ckpt_path={tmp_path / 'mid' / f'step{step}.ckpt'}")
        resumed.paths.output_dir = str(tmp_path / f"resumed_{step}")
        assert train(resumed) == result, step
    again = torch.load(tmp_path / "resumed_6" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert_equal(again["state_dict"], last["state_dict"])
    assert_equal(again["current_model_state"], last["current_model_state"])


def test_a_diverged_run_leaves_a_finite_average(compose_cfg, tmp_path: Path) -> None:
    """The step with the non-finite loss leaves NaN BatchNorm statistics; the guard puts the model's back and the
    average never took them in, so last.ckpt, written as the run stops, is finite."""
    with pytest.raises(DivergedError, match="training loss is nan"):
        train(compose_cfg("callbacks=ema", "model.lr=1e30", "trainer.max_epochs=2", "logger=csv"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        assert all(torch.isfinite(t).all() for t in last[key].values() if t.is_floating_point()), key


def test_ema_update_reads_nothing_on_the_host(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's own update (``AveragedModel.update_parameters``) reads its count twice per update."""
    reads, updates = HostReads(monkeypatch), []
    batch_end = EMA.on_train_batch_end

    def counted(self, *args) -> None:
        updates.append(self._latest_update_step)
        with reads.counting():
            batch_end(self, *args)

    monkeypatch.setattr(EMA, "on_train_batch_end", counted)
    train(compose_cfg("callbacks=ema", "trainer.max_epochs=1", "collapse_threshold=0", "logger=csv"))
    assert updates == [0, 1, 2, 3] and reads.reads == []


def test_ema_settings_are_checked(compose_cfg) -> None:
    with pytest.raises(UserError, match=r"^callbacks.ema.decay=1.5: expected in \[0, 1\]$"):
        check(compose_cfg("callbacks=ema", "callbacks.ema.decay=1.5"))
    with pytest.raises(UserError, match="callbacks.ema.decay_rate is not an argument"):
        check(compose_cfg("callbacks=ema", "+callbacks.ema.decay_rate=0.9"))


# Every data path: in memory (the CPU loader, and the on-device one), streamed from disk, and a folder of files.
DATA_PATHS = {
    "in_memory": ["data.on_device=false"],
    "on_device": ["data.on_device=true"],
    "streaming": ["data.in_memory=false"],
    "folder": ["data=folder", "data.image_size=16", "data.in_memory=false", "data.num_workers=1",
               "data.train_size=24", "data.val_size=8", "data.test_size=8", "data.batch_size=8"],
}  # fmt: skip


def epoch(loader, number: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(number)
    return list(loader)


@pytest.mark.parametrize("path", DATA_PATHS)
def test_hflip_mirrors_the_seeded_half_of_the_training_images_only(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    extra = [f"data.root={write_image_folder(tmp_path / 'images', corrupt=False)}"] if path == "folder" else []
    plain_data = instantiate(compose_cfg(*DATA_PATHS[path], *extra).data)
    flipped_data, same_seed = (instantiate(compose_cfg(*DATA_PATHS[path], *extra, "data.hflip=true").data)
                               for _ in range(2))  # fmt: skip
    for data in (plain_data, flipped_data, same_seed):
        data.setup("fit")
    plain, flipped = plain_data.train_dataloader(), flipped_data.train_dataloader()
    masks = []
    for number in (0, 1):
        flips = epoch_flips(plain.sampler.n, seed=0, epoch=number)  # by image: a function of (seed, epoch)
        plain.sampler.set_epoch(number)
        batches = plain.sampler.epoch_batches()  # the epoch's indices
        for indices, a, b in zip(batches, epoch(plain, number), epoch(flipped, number), strict=True):
            mask = flips[indices]
            assert torch.equal(b, torch.where(mask.view(-1, 1, 1, 1), a.flip(-1), a))
            assert not torch.equal(a[mask], a[mask].flip(-1))  # the mirrored images differ from the originals
            masks.append(mask)
        again = epoch(same_seed.train_dataloader(), number)  # another module, the same seed: the same flips
        assert all(torch.equal(x, y) for x, y in zip(epoch(flipped, number), again, strict=True))
    share = torch.cat(masks).float().mean().item()
    n = plain.sampler.n
    assert 0.3 < share < 0.7 and len(torch.cat(masks)) == 2 * n  # every image, each epoch
    # Each epoch draws anew, another seed draws others.
    assert not torch.equal(epoch_flips(n, 0, 0), epoch_flips(n, 0, 1))
    assert not torch.equal(epoch_flips(n, 0, 0), epoch_flips(n, 1, 0))

    if path == "on_device":  # mirrored on the device: no value read on the host
        reads = HostReads(monkeypatch)
        with reads.counting():
            epoch(flipped, 2)
        assert reads.reads == []

    # A resumed epoch (2 batches done) mirrors what the whole epoch mirrored from there on.
    whole = epoch(flipped, 1)
    flipped.load_state_dict({"epoch": 1, "batches_done": 2})
    assert all(torch.equal(x, y) for x, y in zip(epoch(flipped, 1), whole[2:], strict=True))

    # Validation and test images are never mirrored.
    for split in ("val", "test"):
        loaders = [getattr(d, f"{split}_dataloader")() for d in (plain_data, flipped_data)]
        assert all(torch.equal(x, y) for x, y in zip(*loaders, strict=True))
        assert torch.equal(torch.cat(list(loaders[1])), flipped_data.images(split))


class FirstBatch(L.Callback):
    """Keeps the first training batch and the autoencoder as it was before its step."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: torch.Tensor, batch_idx: int) -> None:
        if batch_idx == 0:
            self.batch, self.net = batch.clone(), copy.deepcopy(pl_module.net)


def hand_step_losses(net: torch.nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """MSE of each step 0..depth, the step fed the previous step's image (MNIST's report network: MSE)."""
    losses, images = [], x
    for _ in range(depth + 1):
        images = torch.sigmoid(net(images))
        losses.append(F.mse_loss(images, x))
    return torch.stack(losses)


@pytest.mark.parametrize("model", ["rae", "rae_gan"])
def test_step_weights_weigh_the_trained_loss_but_not_val_loss(compose_cfg, model: str) -> None:
    weights = [0.5, 0.0, 2.0]
    overrides = [f"model={model}", "model.recursion_depth=2", f"model.step_weights=[{','.join(map(str, weights))}]"]
    cfg = compose_cfg(*overrides, *(["model.warmup_epochs=1"] if model == "rae_gan" else []))
    datamodule, module = data_and_model(cfg)
    first = FirstBatch()
    trainer = L.Trainer(accelerator="cpu", max_steps=1, log_every_n_steps=1, limit_val_batches=0, logger=False,
                        callbacks=[first], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    with torch.no_grad():  # the same training-mode forward pass as the step's
        expected = (torch.tensor(weights) * hand_step_losses(first.net, first.batch, 2)).sum()
    torch.testing.assert_close(trainer.callback_metrics["train/loss_step"], expected)

    # val/loss is the plain sum: the same weights without step_weights score the same.
    unweighted = instantiate(compose_cfg("model=rae", "model.recursion_depth=2").model, image_shape=[1, 28, 28])
    unweighted.load_state_dict(module.state_dict(), strict=False)  # (the game's discriminator is left out)
    evaluator = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    scores = [evaluator.validate(m, datamodule=datamodule, verbose=False)[0]["val/loss"] for m in (module, unweighted)]
    assert scores[0] == scores[1]


def test_step_weights_are_checked_in_one_line(compose_cfg) -> None:
    with pytest.raises(UserError, match=r"^model.step_weights=\[1.0, -1.0, 0.0\]: expected each >= 0$"):
        check(compose_cfg("model=rae", "model.step_weights=[1.0,-1.0,0.0]"))
    with pytest.raises(Exception) as raised:
        data_and_model(compose_cfg("model=rae", "model.step_weights=[1,1]"))  # model=rae: depth 2
    assert str(user_error(raised.value)) == (
        "model.step_weights=[1, 1] has 2 weights, but model.recursion_depth=2 trains 3 steps (0..2): give one per step"
    )


# Recursion warm-up (model.recursion_warmup_epochs)


class NetCallsPerEpoch(L.Callback):
    """Training-mode calls of the autoencoder per epoch, and its weights after each epoch."""

    def __init__(self, module: L.LightningModule) -> None:
        self.calls: dict[int, int] = {}
        self.weights: list[dict[str, torch.Tensor]] = []
        module.net.register_forward_hook(self.count)
        self.module = module

    def count(self, net: torch.nn.Module, args, output) -> None:
        if net.training:
            epoch = self.module.trainer.current_epoch
            self.calls[epoch] = self.calls.get(epoch, 0) + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})


@pytest.mark.parametrize(("model", "plain"), [("rae", "ae"), ("rae_gan", "ae_gan")])
def test_recursion_warmup_trains_the_plain_autoencoder_first(compose_cfg, model: str, plain: str) -> None:
    """Epoch 0 of a depth-2 model with ``recursion_warmup_epochs=1`` is its AE's epoch 0, exactly (same weights
    after it); epoch 1 trains steps 0..2, three passes of the net per batch."""
    game = ["model.warmup_epochs=2"] if model == "rae_gan" else []  # the game needs the recursion trained first
    runs = {}
    for name, overrides in [(model, ["model.recursion_depth=2", "model.recursion_warmup_epochs=1"]), (plain, [])]:
        datamodule, module = data_and_model(compose_cfg(f"model={name}", *game, *overrides))
        seen = NetCallsPerEpoch(module)
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=2, limit_val_batches=0,
                            logger=False, callbacks=[seen], enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        runs[name] = seen
    assert runs[model].calls == {0: 2, 1: 6} and runs[plain].calls == {0: 2, 1: 2}
    assert_equal(runs[model].weights[0], runs[plain].weights[0])
    assert not torch.equal(runs[model].weights[1]["encoder.0.weight"], runs[plain].weights[1]["encoder.0.weight"])


def test_a_negative_recursion_warmup_is_a_one_line_error(compose_cfg) -> None:
    with pytest.raises(UserError, match=r"^model.recursion_warmup_epochs=-1: expected >= 0$"):
        check(compose_cfg("model=rae", "model.recursion_warmup_epochs=-1"))
