"""The LightningModules: AE/RAE (``RecursiveAutoencoder``) and AE+GAN/RAE+GAN (``AdversarialAutoencoder``).

Recursion, as in the report's section 4.3: step 0 is the plain reconstruction AE(x), step i
feeds step i-1's image back in, AE(...AE(x)) applied i+1 times (the report's x'(i+1)).
A model of ``recursion_depth`` k trains on steps 0..k and its loss is the sum of their
reconstruction losses (equal weights unless ``step_weights`` are given); gradients flow through the whole chain.
AE is k = 0. The adversarial model's discriminator judges every step 0..k.
"""

from recursive_ae_gan.models.adversarial import AdversarialAutoencoder
from recursive_ae_gan.models.autoencoder import NetSpec, RecursiveAutoencoder, adam, build
from recursive_ae_gan.models.metrics import PixelBCE, step_metrics

__all__ = ["AdversarialAutoencoder", "NetSpec", "PixelBCE", "RecursiveAutoencoder", "adam", "build", "step_metrics"]
