"""The configs, shipped as the package ``recursive_ae_gan.conf`` (setup.py): an install carries them."""
