"""The GPU fast path's parts, checked on the CPU: on-device batches, bf16 autocast, compile, fused Adam, and
training steps that read nothing on the host.

On a GPU the data stay on the device (``DeviceBatches``), the step runs under bf16 autocast
(``trainer=gpu``), the networks may be compiled and Adam is fused; each must give the same
training as the plain path, which is what these tests pin down without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import SHAPES, HostReads, data_and_model
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from recursive_ae_gan.data import DeviceBatches
from recursive_ae_gan.models import VARIANTS


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_on_device_batches_equal_the_dataloader_batches(compose_cfg: Callable[..., DictConfig], dataset: str) -> None:
    loaders = {}
    for on_device in (True, False):
        datamodule = instantiate(compose_cfg(f"data={dataset}", f"data.on_device={on_device}").data)
        datamodule.setup("fit")  # no trainer attached: the "device" is the CPU
        loaders[on_device] = datamodule.train_dataloader()
    assert isinstance(loaders[True], DeviceBatches) and isinstance(loaders[False], DataLoader)

    orders = []
    for epoch in (0, 1):
        batches = {}
        for on_device, loader in loaders.items():
            loader.sampler.set_epoch(epoch)  # what Lightning calls at every epoch start, on both paths
            batches[on_device] = list(loader)
        assert len(batches[True]) == len(batches[False]) == 4  # 64 training images, batch size 16
        for device_batch, loader_batch in zip(batches[True], batches[False], strict=True):
            assert device_batch.dtype == torch.uint8
            assert torch.equal(device_batch, loader_batch)
        epoch_images = torch.cat(batches[True])
        assert torch.equal(epoch_images.sort(0).values, datamodule.splits["train"].sort(0).values)
        orders.append(epoch_images)
    assert not torch.equal(*orders)  # each epoch is shuffled anew


def _first_conv(model: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("model_name", VARIANTS)
def test_bf16_cpu_training_step_is_finite(
    compose_cfg: Callable[..., DictConfig], dataset: str, model_name: str
) -> None:
    adversarial = model_name.endswith("gan")
    overrides = [f"data={dataset}", f"model={model_name}", "trainer.precision=bf16-mixed", "trainer.fast_dev_run=true"]
    cfg = compose_cfg(*overrides, *(["model.warmup_epochs=0"] if adversarial else []))  # the game, not warm-up
    datamodule, model = data_and_model(cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    conv_dtypes = []
    _first_conv(model).register_forward_hook(lambda module, args, out: conv_dtypes.append(out.dtype))
    trainer = instantiate(cfg.trainer, logger=False)

    trainer.fit(model, datamodule=datamodule)

    assert torch.bfloat16 in conv_dtypes  # autocast was on
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert len(trainer.optimizers) == 1 + adversarial
    assert all(opt.defaults["fused"] for opt in trainer.optimizers)
    state = model.state_dict()
    for prefix in ["net."] + (["discriminator."] if adversarial else []):
        params = [k for k in state if k.startswith(prefix) and k.endswith("weight")]
        assert all(torch.isfinite(state[k]).all() for k in params)
        assert any(not torch.equal(state[k], initial[k]) for k in params)  # that network's optimizer stepped
    if adversarial:
        assert torch.isfinite(trainer.callback_metrics["train/d_loss"])


@pytest.mark.parametrize("model_name", ["ae", "rae_gan"])
def test_compile_composes_and_keeps_checkpoint_keys(compose_cfg: Callable[..., DictConfig], model_name: str) -> None:
    # Compiling for real takes about 40 s on this 2-core CPU: the tests only build the model.
    shape = list(SHAPES["cifar10"])
    compiled = instantiate(
        compose_cfg("data=cifar10", f"model={model_name}", "model.compile=true").model, image_shape=shape
    )
    plain = instantiate(compose_cfg("data=cifar10", f"model={model_name}").model, image_shape=shape)

    assert compiled.hparams.compile is True
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # no _orig_mod. prefix in checkpoints
    networks = ["net", "discriminator"] if model_name.endswith("gan") else ["net"]
    # nn.Module.compile() leaves its compiled __call__ here, the only trace before the first call.
    assert all(getattr(compiled, name)._compiled_call_impl is not None for name in networks)
    assert all(getattr(plain, name)._compiled_call_impl is None for name in networks)


@pytest.mark.parametrize(
    ("model_name", "balance", "reads_per_batch"),
    [("ae", None, 0), ("rae", None, 0), ("ae_gan", "target", 0), ("rae_gan", "alternate", 0), ("ae_gan", "report", 1)],
)
def test_training_steps_read_nothing_on_the_host(
    compose_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    model_name: str,
    balance: str | None,
    reads_per_batch: int,
) -> None:
    """No host sync in a training step (on a GPU each one stalls the queue), but the report policy's freeze."""
    game = [f"model.balance={balance}", "model.warmup_epochs=0"] if balance else []
    cfg = compose_cfg(f"model={model_name}", *game, "model.divergence_check_every=100", "trainer.max_epochs=1")
    datamodule, model = data_and_model(cfg)
    reads = HostReads(monkeypatch)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[reads], enable_checkpointing=False)

    trainer.fit(model, datamodule=datamodule)

    in_steps = [(batch, function) for phase, batch, function in reads.reads if phase == "step"]
    assert in_steps == [(batch, "report_freezes_discriminator") for batch in range(4) for _ in range(reads_per_batch)]
    assert all(function == "first_failure" for phase, _, function in reads.reads if phase != "step")
