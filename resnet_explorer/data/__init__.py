"""The data layer: datasets, the paper's preprocessing, and loaders for the trainer.

    sources     what ``--data`` names (`parse_data` → `DataSource`) and the layout checks
    synthetic   the embedded default dataset, generated from a seed
    cifar       CIFAR-10's pickled batches, and `GpuCifarLoader` (a whole dataset on the device)
    folder      image folders decoded once into memory, cached
    transforms  the paper's ImageNet preprocessing (scale, crop, flip, lighting, mean; test views)
    views       the paper's ImageNet views as geometry both input paths share (draws, batched resample)
    jpeg        reading ImageNet files for the GPU path (JPEG bytes, odd files decoded with PIL)
    batches     the epoch's (index, seed) batches; unreadable files skipped with one warning line
    imagenet    the ImageNet loaders: the CPU path (PIL, worker processes) and `--loader` resolution
    gpu_imagenet  the GPU path: nvJPEG decoding and the augmentation as batched tensor ops
    loaders     `make_loaders`: the training and evaluation loaders of a source
    seeds, cpus deterministic seeds; how many loader processes this machine allows

What a user or the trainer needs is importable from ``resnet_explorer.data`` itself; the
helpers the data modules share (`seeds.seeded_generator`, `sources.layout_error` …) stay
in their modules.
"""

from ..errors import DataError
from .cifar import GpuCifarLoader, download_cifar10, read_cifar10
from .cpus import resolve_workers
from .folder import load_image_folder
from .gpu_imagenet import GpuImageNetLoader
from .imagenet import LOADERS, ImageNetLoader, estimate_imagenet_mean, make_imagenet_loader, resolve_loader
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
    as_source,
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
    PaperTrainTransform,
    SubtractMean,
    imagenet_eval_transform,
    imagenet_train_transform,
    multi_scale,
    ten_crop,
)
from .views import View, draw_train_view, eval_views, resample_views, scale_views

__all__ = [
    "DataError", "DataSource", "parse_data", "as_source", "FORMS", "LAYOUTS", "IMAGE_EXTENSIONS",
    "CIFAR10_CLASSES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "SYNTHETIC_CLASSES", "SYNTHETIC_TRAIN", "SYNTHETIC_TEST",
    "synthetic_cifar", "write_synthetic_imagenet", "GpuCifarLoader", "read_cifar10", "download_cifar10",
    "load_image_folder", "resolve_workers", "ImageNetLoader", "make_imagenet_loader",
    "estimate_imagenet_mean", "make_loaders", "load_tensors", "pixel_mean", "channel_std",
    "split_train_val", "mix_seed", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC", "MULTI_SCALES", "Lighting", "SubtractMean", "imagenet_train_transform",
    "imagenet_eval_transform", "ten_crop", "multi_scale", "PaperTrainTransform", "GpuImageNetLoader",
    "LOADERS", "resolve_loader", "View", "draw_train_view", "eval_views", "scale_views", "resample_views",
]
