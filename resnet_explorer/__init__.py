"""resnet-explorer: build, count, train and see the deep residual networks of He et al. 2015."""

from .count import CONVENTION, Count, LayerCount, count
from .errors import UserError
from .model import Net, build
from .paper import PAPER, PaperFigure, figures_for
from .spec import ArchSpec, ConvLayer, Head, Pool, SpecError, Stage
from .zoo import alexnet, arch_names, cifar_resnet, get_spec, imagenet_resnet, vgg

__version__ = "0.1.0"

__all__ = [
    "ArchSpec", "Stage", "ConvLayer", "Pool", "Head", "SpecError", "UserError",
    "build", "Net", "count", "Count", "LayerCount", "CONVENTION",
    "get_spec", "arch_names", "imagenet_resnet", "cifar_resnet", "vgg", "alexnet",
    "PAPER", "PaperFigure", "figures_for",
]
