"""Recursive autoencoders, alone and against a discriminator (PyTorch Lightning + Hydra)."""
