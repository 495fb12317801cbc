"""The report's protocols (conf/experiment/): each composes with the sizes, epochs and model section 5 states."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import CONF_DIR, DATASET_CLASSES, SHAPES
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan.module import AdversarialAutoencoder, RecursiveAutoencoder
from recursive_ae_gan.networks import Cifar10Autoencoder, MLPDiscriminator, MnistAutoencoder

# name: dataset, module class, recursion depth, loss, train / val / test sizes, epochs.
PROTOCOLS = {
    "mnist_ae": ("mnist", RecursiveAutoencoder, 0, "mse", 3000, 600, 600, 100),
    "cifar10_ae": ("cifar10", RecursiveAutoencoder, 0, "bce", 10000, 2000, 2000, 200),
    "cifar10_rae": ("cifar10", RecursiveAutoencoder, 2, "bce", 10000, 2000, 2000, 150),
    "mnist_ae_gan": ("mnist", AdversarialAutoencoder, 0, "mse", 7000, 2000, 2000, 200),
    "cifar10_ae_gan": ("cifar10", AdversarialAutoencoder, 0, "bce", 20000, 2000, 2000, 20),
    "cifar10_rae_gan": ("cifar10", AdversarialAutoencoder, 2, "bce", 20000, 2000, 2000, 20),
}
FULL_SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000)}  # train, test images
NETS = {"mnist": MnistAutoencoder, "cifar10": Cifar10Autoencoder}  # the report's, picked by the image shape


@pytest.mark.parametrize("name", PROTOCOLS)
def test_experiment_sets_the_reports_protocol(name: str) -> None:
    dataset, module, depth, loss, train, val, test, epochs = PROTOCOLS[name]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={name}"])
    sizes = (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size)
    assert (cfg.data.dataset, *sizes) == (DATASET_CLASSES[dataset], train, val, test)
    assert (cfg.data.train_split, cfg.data.test_split) == ({"train": True}, {"train": False})  # torchvision's pools
    assert cfg.trainer.max_epochs == epochs
    assert train + val <= FULL_SIZES[dataset][0] and test <= FULL_SIZES[dataset][1]
    model = instantiate(cfg.model, image_shape=list(SHAPES[dataset]))
    assert type(model) is module and type(model.net) is NETS[dataset]
    assert (model.depth, model.loss_name) == (depth, loss)
    if module is AdversarialAutoencoder:  # the report's 4-layer MLP on the flattened image
        assert type(model.discriminator) is MLPDiscriminator
        assert model.discriminator.net[1].in_features == math.prod(SHAPES[dataset])


def test_experiments_match_the_makefiles_reproduce_list() -> None:
    makefile = (Path(CONF_DIR).parent / "Makefile").read_text()
    listed = re.search(r"^EXPERIMENTS \?= (.+)$", makefile, re.MULTILINE)[1].split(",")
    files = {p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml")}
    assert set(listed) == files == set(PROTOCOLS)
