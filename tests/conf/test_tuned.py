"""The tuned protocols (conf/experiment/*_tuned.yaml): each keeps its faithful protocol's data sizes, loss, depth
and the report's code size, in no more epochs, and trains on the fixtures; the bench times the tuned net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, SHAPES
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan.core.errors import UserError
from recursive_ae_gan.networks import ConvAutoencoder, PatchAutoencoder
from recursive_ae_gan.perf import bench
from recursive_ae_gan.run.train import train

# tuned protocol: its faithful protocol, its dataset, the report's code (shape of one image's code).
TUNED = {
    "mnist_ae_tuned": ("mnist_ae", "mnist", (16,)),
    "cifar10_ae_tuned": ("cifar10_ae", "cifar10", (64, 4, 4)),
    "cifar10_rae_tuned": ("cifar10_rae", "cifar10", (64, 4, 4)),
    "cifar10_rae_gan_tuned": ("cifar10_rae_gan", "cifar10", (64, 4, 4)),
    "cifar10_rae_gan_realistic_tuned": ("cifar10_rae_gan", "cifar10", (64, 4, 4)),
    "cifar10_rae_gan_generative_tuned": ("cifar10_rae_gan", "cifar10", (64, 4, 4)),
}


def test_every_tuned_file_is_listed() -> None:
    assert {p.stem for p in Path(CONF_DIR, "experiment").glob("*_tuned.yaml")} == set(TUNED)


@pytest.mark.parametrize("name", TUNED)
def test_tuned_protocol_keeps_the_faithful_sizes_and_the_reports_code(name: str) -> None:
    faithful_name, dataset, code_shape = TUNED[name]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        tuned, faithful = (compose(config_name="train", overrides=[f"experiment={n}"]) for n in (name, faithful_name))
    for key in ("dataset", "train_size", "val_size", "test_size", "train_split", "test_split"):
        assert tuned.data[key] == faithful.data[key], key
    assert tuned.trainer.max_epochs <= faithful.trainer.max_epochs
    tuned_model, faithful_model = (instantiate(c.model, image_shape=list(SHAPES[dataset])) for c in (tuned, faithful))
    assert type(tuned_model) is type(faithful_model)
    assert (tuned_model.depth, tuned_model.loss_name) == (faithful_model.depth, faithful_model.loss_name)
    # The code counted on the encoder's output, not read from an attribute: 16 numbers (MNIST), 64x4x4 (CIFAR10).
    codes = tuned_model.net.encoder(torch.rand(3, *SHAPES[dataset]))
    assert codes.shape[1:] == code_shape
    assert codes[0].numel() == faithful_model.net.encoder(torch.rand(3, *SHAPES[dataset]))[0].numel()


@pytest.mark.parametrize("name", TUNED)
def test_tuned_protocol_trains_on_the_fixtures(compose_cfg, tmp_path: Path, name: str) -> None:
    overrides = [f"experiment={name}", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "collapse_threshold=0"]
    overrides.append("model.recursion_warmup_epochs=0")  # train every step 0..k in the one epoch
    if "gan" in name:
        overrides.append("model.warmup_epochs=0")  # play the game in the one epoch
    cfg = compose_cfg(*overrides, "logger=csv")
    result = train(cfg)
    assert result["status"] == "ok" and torch.isfinite(torch.tensor(result["score"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    game = cfg.model.get("warmup_epochs") == 0  # the game plays in the one epoch
    assert last["global_step"] == (4 if game else 2)  # the game takes two optimizer steps a batch


@pytest.mark.parametrize(
    ("dataset", "net", "net_class", "code_shape"),
    [("cifar10", "patch", PatchAutoencoder, (64, 4, 4)), ("mnist", "mnist_tuned", ConvAutoencoder, (16,))],
)
def test_bench_times_the_tuned_nets_on_the_framework_and_the_plain_loop_alike(
    dataset: str, net: str, net_class: type, code_shape: tuple[int, ...]
) -> None:
    """``bench.nets=[patch]`` (or ``mnist_tuned``): the plain loop builds the tuned net too, and trains it exactly
    as the framework does (same weights after the same batches), so its ratio compares the same work."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        s = bench.plan(compose("bench", ["bench.quick=true", "bench.device=cpu", f"bench.nets=[{net}]"]).bench)
        cfg = bench.train_config(s, dataset, "ae", batch_size=8, net=s.nets[0])
        with pytest.raises(UserError, match=r"bench.nets=\['vae'\] must list some of: .*mnist_tuned, patch"):
            bench.plan(compose("bench", ["bench.nets=[vae]"]).bench)
    module, timed = bench.run_both(cfg, lambda plain: bench.Interleave(plain, 1, 2, 2, sync=lambda: None))
    assert type(module.net) is type(timed.plain.net) is net_class
    torch.testing.assert_close(timed.plain.state_dict(), module.state_dict())
    assert module.net.encoder(torch.rand(1, *SHAPES[dataset])).shape[1:] == code_shape
