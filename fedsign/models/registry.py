"""Model registry: ``build_model`` by name and ``check_model_input``."""

from __future__ import annotations

from torch import nn

from .cnn import CNN_SMALL_CHANNELS, CNN_SMALL_HIDDEN, SmallCNN, cnn_num_pools
from .fedavg_cnn import FedAvgCNN, fedavg_cnn_side
from .common import ModelConfigError, check_bn_weight_init, check_init, initialize
from .mlp import MLP
from .resnet import CifarResNet
from .vgg import VGG, VGG_CFGS

MODEL_NAMES = ("cnn", "cnn_small", "mlp", "fedavg_cnn", "resnet20", "vgg8", "vgg8_bn", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn")
# The initialization a run gets with init='auto', chosen per model by measurement (README, "Initialization"):
# the paper's VGGs keep FedRepo's scheme, the generic models train faster from PyTorch's defaults.
DEFAULT_INIT = {name: "fedrepo" if name.startswith("vgg") else "pytorch" for name in MODEL_NAMES}


def resolve_init(init: str, model: str) -> str:
    """``init`` with "auto" replaced by the model's ``DEFAULT_INIT``."""
    if init == "auto":
        return DEFAULT_INIT.get(model, "fedrepo")
    check_init(init)
    return init


def _is_pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_model_input(name: str, in_channels: int, image_size: int) -> None:
    """Raise ``ModelConfigError`` (a ValueError) if model ``name`` cannot take [in_channels, image_size, image_size]."""
    if name not in MODEL_NAMES:
        raise ModelConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if not _is_pos_int(in_channels):
        raise ModelConfigError(f"{name}: in_channels must be a positive int, got {in_channels!r}")
    if not _is_pos_int(image_size):
        raise ModelConfigError(f"{name}: image_size must be a positive int, got {image_size!r}")
    if name.startswith("vgg"):
        if image_size < 32 or image_size % 32:
            raise ModelConfigError(
                f"{name} has 5 max-pools and needs image_size >= 32 and divisible by 32, got {image_size}; "
                "use cnn or resnet20 for smaller images, or resize to 32"
            )
    elif name == "fedavg_cnn":
        if fedavg_cnn_side(image_size) < 1:
            raise ModelConfigError(f"{name} has two unpadded 5x5 convolutions and 2x2 max-pools and needs "
                                   f"image_size >= 16, got {image_size}; use cnn for smaller images")
    elif name.startswith("cnn"):
        step = 2 ** cnn_num_pools(image_size)
        if image_size < 4 or image_size % step:
            raise ModelConfigError(
                f"{name} needs image_size >= 4, even below 16 and divisible by 4 from 16 up, got {image_size}"
            )


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    projection_dim: int | None = None,
    bn_weight_init: str = "ones",
    init: str = "fedrepo",
) -> nn.Module:
    """Build and initialize model ``name`` (one of :data:`MODEL_NAMES`).

    ``projection_dim`` adds MOON's head ``projection = Linear(d,d)-ReLU-Linear(d,projection_dim)``
    before ``classifier = Linear(projection_dim, num_classes)``. ``bn_weight_init`` in
    {"ones", "uniform", "gaussian"} sets BatchNorm weights (no effect on nets without BN:
    cnn, vgg8, vgg11, vgg16). ``init``: "fedrepo" or "pytorch" (``fedsign.models.common``), or "auto"
    (the model's ``DEFAULT_INIT``). All draws use the global torch RNG (seed with ``torch.manual_seed``).
    """
    check_model_input(name, in_channels, image_size)
    if not _is_pos_int(num_classes):
        raise ModelConfigError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    if projection_dim is not None and not _is_pos_int(projection_dim):
        raise ModelConfigError(f"{name}: projection_dim must be None or a positive int, got {projection_dim!r}")
    check_bn_weight_init(bn_weight_init)
    init = resolve_init(init, name)
    if name == "cnn":
        model: nn.Module = SmallCNN(num_classes, in_channels, image_size, projection_dim)
    elif name == "cnn_small":
        model = SmallCNN(num_classes, in_channels, image_size, projection_dim, CNN_SMALL_CHANNELS, CNN_SMALL_HIDDEN)
    elif name == "fedavg_cnn":
        model = FedAvgCNN(num_classes, in_channels, image_size, projection_dim)
    elif name == "mlp":
        model = MLP(num_classes, in_channels, image_size, projection_dim)
    elif name == "resnet20":
        model = CifarResNet(3, num_classes, in_channels, projection_dim)
    else:
        base, _, bn = name.partition("_")
        model = VGG(VGG_CFGS[base], num_classes, in_channels, image_size, bn == "bn", projection_dim)
    return initialize(model, bn_weight_init, init)
