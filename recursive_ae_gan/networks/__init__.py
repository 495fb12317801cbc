"""The networks: autoencoders (``model/net``) and discriminators (``model/discriminator``).

Every network is built from the data's image shape, the keyword ``image_shape=(C, H, W)``, plus
its own config; the configs carry no shape (``instantiate(cfg, image_shape=shape)``), so the data,
not a dataset name, sizes the network.

* ``report_autoencoder``: the report's MNIST (1x28x28) or CIFAR10 (3x32x32) network, picked by the
  shape (``report``); ``ConvAutoencoder``: the CIFAR10 design for any size and width (``conv``);
  ``PatchAutoencoder``: a learnt linear code of each tile, the tuned CIFAR10 recipes' net (``patch``).
* ``MLPDiscriminator``: the report's 4-layer MLP; ``ConvDiscriminator``: a PatchGAN stack.

Contracts the training code relies on:

* Every autoencoder returns *logits* (B, C, H, W); callers apply ``torch.sigmoid`` to get images
  in [0, 1]. Keeping the logits lets the BCE loss use its numerically safe ``*_with_logits``
  form, which stays correct under bf16 autocast. ``default_loss`` names the loss to use when the
  config gives none (the report's: MNIST mse, CIFAR10 bce; ``ConvAutoencoder`` bce).
* Every discriminator returns one logit per image, (B,), and has no normalisation that mixes
  images, so one call on a concatenation of batches equals separate calls.
* An override that cannot build for the data's shape raises ``UserError`` with a one-line message
  naming the setting and the shape.

The choices where the report is ambiguous are written down in ``report`` and ``conv``.
"""

from recursive_ae_gan.networks.conv import ConvAutoencoder, ConvDiscriminator
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
    "ConvDiscriminator",
    "MLPDiscriminator",
    "MnistAutoencoder",
    "PatchAutoencoder",
    "report_autoencoder",
]
