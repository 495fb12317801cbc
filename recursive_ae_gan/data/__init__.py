"""Images for the autoencoders: sources (torchvision classes, folders), the batch sampler and loaders, the module."""

from recursive_ae_gan.data.datamodule import ImageDataModule
from recursive_ae_gan.data.loaders import BatchIndexSampler, BatchLoader, DeviceBatches, epoch_permutation

__all__ = ["BatchIndexSampler", "BatchLoader", "DeviceBatches", "ImageDataModule", "epoch_permutation"]
