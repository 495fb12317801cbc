"""Images for the autoencoders: sources (torchvision classes, folders), the batch sampler and loaders, the module."""

from recursive_ae_gan.data.loaders import BatchIndexSampler, BatchLoader, DeviceBatches, epoch_permutation
from recursive_ae_gan.data.module import ImageDataModule

__all__ = ["BatchIndexSampler", "BatchLoader", "DeviceBatches", "ImageDataModule", "epoch_permutation"]
