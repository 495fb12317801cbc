"""The report's protocols (conf/experiment/): each composes with the sizes, epochs and model section 5 states."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from helpers import CONF_DIR, DATASET_CLASSES, SHAPES
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recursive_ae_gan.models import AdversarialAutoencoder, RecursiveAutoencoder
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
    faithful = {f for f in files if not f.startswith("study_") and not f.endswith("_tuned")}
    assert set(listed) == faithful == set(PROTOCOLS)
    assert {f for f in files if f.startswith("study_")} == set(STUDIES)


# A study: the protocol every variant shares, and the variants (module, depth) it sweeps over seeds.
STUDIES = {"study_mnist": "mnist_ae", "study_cifar10": "cifar10_ae_gan"}
VARIANTS = {"ae": (RecursiveAutoencoder, 0), "rae": (RecursiveAutoencoder, 2), "ae_gan": (AdversarialAutoencoder, 0)}
VARIANTS["rae_gan"] = (AdversarialAutoencoder, 2)


@pytest.mark.parametrize("name", STUDIES)
def test_study_sweeps_the_four_variants_over_seeds_on_one_protocol(name: str) -> None:
    dataset, _, _, loss, train, val, test, epochs = PROTOCOLS[STUDIES[name]]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=[f"experiment={name}"], return_hydra_config=True).hydra
        swept = {key: value.split(",") for key, value in hydra_cfg.sweeper.params.items()}
        assert hydra_cfg.mode.name == "MULTIRUN"
        assert swept["model"] == list(VARIANTS) and len(set(swept["seed"])) >= 3 and set(swept) == {"model", "seed"}
        for variant, (module, depth) in VARIANTS.items():
            cfg = compose(config_name="train", overrides=[f"experiment={name}", f"model={variant}", "seed=1"])
            assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size) == (train, val, test)
            assert (cfg.trainer.max_epochs, cfg.data.dataset, cfg.data.seed) == (epochs, DATASET_CLASSES[dataset], 1)
            model = instantiate(cfg.model, image_shape=list(SHAPES[dataset]))
            assert (type(model), model.depth, model.loss_name, type(model.net)) == (module, depth, loss, NETS[dataset])
            if module is AdversarialAutoencoder:  # the weight cap of the dataset's faithful GAN protocol
                assert model.adv_weight_bounds == {"mse": (0.0, 0.1), "bce": (0.0, 1.0)}[loss]


def test_an_explicit_adversarial_weight_range_is_kept() -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["model=ae_gan", "data=cifar10", "model.adv_weight_bounds=[0.0,0.3]"]
        )
    assert instantiate(cfg.model, image_shape=list(SHAPES["cifar10"])).adv_weight_bounds == (0.0, 0.3)
