"""The networks: autoencoders (``model/net``), discriminators (``model/discriminator``) and realism judges
(``realism/judge``), each built from the data's image shape (``instantiate(cfg, image_shape=shape)``).

Contracts the training code relies on: every autoencoder returns *logits* (B, C, H, W) (``torch.sigmoid`` gives
the images; BCE then takes its safe logits form) and names its ``default_loss``; every discriminator or judge
returns one logit per image, (B,), and mixes no images, so one call on a concatenation of batches equals separate
calls; an override that cannot build for the data's shape is a one-line ``UserError``.
"""

from recursive_ae_gan.networks.conv import ConvAutoencoder, ConvClassifier, ConvDiscriminator, HighPassClassifier
from recursive_ae_gan.networks.generative import GenerativeAutoencoder
from recursive_ae_gan.networks.paper import (
    Cifar10Autoencoder,
    MLPDiscriminator,
    MnistAutoencoder,
    report_autoencoder,
)
from recursive_ae_gan.networks.patch import PatchAutoencoder

__all__ = [
    "Cifar10Autoencoder",
    "ConvAutoencoder",
    "ConvClassifier",
    "ConvDiscriminator",
    "GenerativeAutoencoder",
    "HighPassClassifier",
    "MLPDiscriminator",
    "MnistAutoencoder",
    "PatchAutoencoder",
    "report_autoencoder",
]
