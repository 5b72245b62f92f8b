"""The data layer: datasets, the paper's preprocessing, and loaders for the trainer.

    sources     what ``--data`` names (`parse_data` → `DataSource`) and the layout checks
    synthetic   the embedded default dataset, generated from a seed
    cifar       CIFAR-10's pickled batches, and `GpuCifarLoader` (a whole dataset on the device)
    folder      image folders decoded once into memory, cached
    transforms  the paper's ImageNet preprocessing (scale, crop, flip, lighting, mean; test views)
    imagenet    the ImageNet loader (lazy, worker processes)
    loaders     `make_loaders`: the training and evaluation loaders of a source
    seeds, cpus deterministic seeds; how many loader processes this machine allows

Everything public is importable from ``resnet_explorer.data`` itself.
"""

from ..errors import DataError
from .cifar import GpuCifarLoader, download_cifar10, read_cifar10
from .cpus import resolve_workers
from .folder import load_image_folder
from .imagenet import ImageNetLoader, estimate_imagenet_mean, make_imagenet_loader
from .loaders import channel_std, load_tensors, make_loaders, pixel_mean, split_train_val
from .seeds import mix_seed
from .sources import (
    CIFAR10_CLASSES,
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    FORMS,
    IMAGE_EXTENSIONS,
    LAYOUTS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_TEST,
    SYNTHETIC_TRAIN,
    DataSource,
    parse_data,
)
from .synthetic import synthetic_cifar, write_synthetic_imagenet
from .transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MULTI_SCALES,
    Lighting,
    SubtractMean,
    imagenet_eval_transform,
    imagenet_train_transform,
    multi_scale,
    ten_crop,
)

__all__ = [
    "DataError", "DataSource", "parse_data", "FORMS", "LAYOUTS", "IMAGE_EXTENSIONS",
    "CIFAR10_CLASSES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "SYNTHETIC_CLASSES", "SYNTHETIC_TRAIN", "SYNTHETIC_TEST",
    "synthetic_cifar", "write_synthetic_imagenet", "GpuCifarLoader", "read_cifar10", "download_cifar10",
    "load_image_folder", "resolve_workers", "ImageNetLoader", "make_imagenet_loader",
    "estimate_imagenet_mean", "make_loaders", "load_tensors", "pixel_mean", "channel_std",
    "split_train_val", "mix_seed", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC", "MULTI_SCALES", "Lighting", "SubtractMean", "imagenet_train_transform",
    "imagenet_eval_transform", "ten_crop", "multi_scale",
]
