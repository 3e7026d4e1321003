"""Parameter groups that receive the noise: ALL, CLF, FEAT, LAYER1, CONV, BN or a name regex."""

from __future__ import annotations

import re

from torch import nn

from fedsign.models import parameter_groups

GROUP_NAMES = ("ALL", "CLF", "FEAT", "LAYER1", "CONV", "BN")


class GroupError(ValueError):
    """A parameter group that names no parameter of the model."""


def first_stage(model: nn.Module) -> list[str]:
    """LAYER1: the parameters of every module registered before the first downsampling.

    A downsampling module is a pooling layer (not adaptive) or a convolution with a stride
    above 1. ResNet-20: ``conv1``, ``bn1`` and ``layer1``; VGG: the convs (and BNs) before the
    first max-pool; the small CNN: the convs before its first max-pool.
    """
    names: list[str] = []
    for prefix, module in model.named_modules():
        pooling = isinstance(module, (nn.MaxPool2d, nn.AvgPool2d))
        strided = isinstance(module, nn.modules.conv._ConvNd) and any(s > 1 for s in module.stride)
        if pooling or strided:
            break
        names += [f"{prefix}.{local}" if prefix else local for local, _ in module.named_parameters(recurse=False)]
    return names


def select_parameters(model: nn.Module, group: str) -> list[str]:
    """Names (in ``named_parameters`` order) of ``group``: one of :data:`GROUP_NAMES` (any case) or a regex.

    CLF is the final classifier (weight and bias), FEAT everything else, CONV the conv layers'
    parameters, BN the BatchNorm weights and biases, LAYER1 see :func:`first_stage`. Any other
    string is a regular expression searched in each parameter name.
    """
    names = [name for name, _ in model.named_parameters()]
    key = group.upper()
    if key == "ALL":
        chosen = set(names)
    elif key in ("CLF", "FEAT", "BN"):
        roles = parameter_groups(model)
        if key == "BN":
            chosen = {n for n in names if roles[n].startswith("bn_")}
        else:
            clf = {n for n in names if roles[n].startswith("classifier_")}
            chosen = clf if key == "CLF" else set(names) - clf
    elif key == "CONV":
        chosen = {f"{prefix}.{local}" if prefix else local for prefix, m in model.named_modules()
                  if isinstance(m, nn.modules.conv._ConvNd) for local, _ in m.named_parameters(recurse=False)}
    elif key == "LAYER1":
        chosen = set(first_stage(model))
    else:
        try:
            pattern = re.compile(group)
        except re.error as err:
            raise GroupError(f"parameter group {group!r} is neither one of {', '.join(GROUP_NAMES)} "
                             f"nor a valid regex ({err})") from None
        chosen = {n for n in names if pattern.search(n)}
    selected = [n for n in names if n in chosen]
    if not selected:
        raise GroupError(f"parameter group {group!r} selects no parameter of this model "
                         f"(groups: {', '.join(GROUP_NAMES)} or a regex over names like {names[0]!r})")
    return selected
