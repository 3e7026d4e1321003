"""Parameter groups that receive the noise, for any ``nn.Module``: ALL, CLF, FEAT, LAYER1, CONV, BN or a regex.

Definitions (module order = ``model.named_modules()``, i.e. registration order):

* ALL: every trainable parameter (``requires_grad``).
* CLF: the parameters of the last ``nn.Linear`` in module order (torchvision ``resnet18.fc``,
  ``vgg11_bn.classifier.6``, ``vit_b_16.heads.head``, the platform's ``classifier``), or, with
  ``clf=``, the module of that exact name or the parameters whose name matches that regex.
* FEAT: every trainable parameter outside CLF (ViT's ``class_token`` and ``pos_embedding`` included).
* LAYER1: the first stage after the stem (see :func:`first_stage`).
* CONV: the parameters of convolution layers.
* BN: the affine parameters of normalization layers (BatchNorm, GroupNorm, LayerNorm, InstanceNorm).

A group that selects nothing raises :class:`GroupError` naming the group.
"""

from __future__ import annotations

import re

from torch import nn

from .errors import LandscapeError

GROUP_NAMES = ("ALL", "CLF", "FEAT", "LAYER1", "CONV", "BN")
ROLES = ("bn_weight", "bn_bias", "classifier_weight", "classifier_bias", "other_weight", "other_bias", "other")
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


class GroupError(LandscapeError):
    """A parameter group that names no parameter of the model."""


def _own_parameters(model: nn.Module, predicate) -> list[str]:
    """Names of the parameters owned (non-recursively) by the modules that satisfy ``predicate``."""
    return [f"{prefix}.{local}" if prefix else local for prefix, m in model.named_modules() if predicate(m)
            for local, _ in m.named_parameters(recurse=False)]


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_downsampling(module: nn.Module) -> bool:
    pooling = isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
    strided = isinstance(module, nn.modules.conv._ConvNd) and any(s > 1 for s in module.stride)
    return pooling or strided


def first_stage(model: nn.Module) -> list[str]:
    """LAYER1, the first stage after the stem:

    1. the first ``nn.Sequential`` / ``nn.ModuleList`` in module order holding at least two blocks of one
       class (a block: a module with submodules and parameters): ResNet-20's and torchvision ResNets'
       ``layer1`` (the stem ``conv1``/``bn1`` excluded), ViT's ``encoder.layers`` (its only stage);
    2. else, for plain conv stacks, the parameters of every module before the first downsampling
       (a non-adaptive pooling layer or a strided convolution): VGG's first conv (+ BN), the
       small CNN's convs before its first max-pool;
    3. else (an MLP: no blocks, no downsampling) nothing: :func:`select_parameters` raises.
    """
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            blocks = [c for c in module.children() if len(list(c.children())) and _has_parameters(c)]
            if len(blocks) >= 2 and len({type(b) for b in blocks}) == 1:
                return [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
    if not any(_is_downsampling(m) for m in model.modules()):
        return []
    names: list[str] = []
    for prefix, module in model.named_modules():
        if _is_downsampling(module):
            break
        names += [f"{prefix}.{local}" if prefix else local for local, _ in module.named_parameters(recurse=False)]
    return names


def classifier_parameters(model: nn.Module, clf: str | None = None) -> list[str]:
    """CLF: the last ``nn.Linear``'s parameters, or ``clf``: a module name, else a regex over parameter names."""
    if clf:
        modules = dict(model.named_modules())
        if clf in modules:
            return [f"{clf}.{local}" for local, _ in modules[clf].named_parameters(recurse=False)]
        pattern = _compile(clf, "classifier")
        return [n for n, _ in model.named_parameters() if pattern.search(n)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    last = linears[-1]
    return [f"{last}.{local}" if last else local for local, _ in model.get_submodule(last).named_parameters(
        recurse=False)]


def _compile(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise GroupError(f"{what} {pattern!r} is neither one of {', '.join(GROUP_NAMES)} nor a module name "
                         f"nor a valid regex ({err})") from None


def select_parameters(model: nn.Module, group: str, clf: str | None = None) -> list[str]:
    """Names (in ``named_parameters`` order) of ``group``: one of :data:`GROUP_NAMES` (any case) or a regex.

    See the module docstring for the definitions; ``clf`` overrides how CLF (and so FEAT) is found.
    """
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    key = group.upper()
    if key == "ALL":
        chosen = trainable
    elif key in ("CLF", "FEAT"):
        head = set(classifier_parameters(model, clf))
        chosen = head if key == "CLF" else trainable - head
        if key == "FEAT" and not head:
            chosen = set()  # FEAT without a classifier would silently equal ALL
    elif key == "CONV":
        chosen = set(_own_parameters(model, lambda m: isinstance(m, nn.modules.conv._ConvNd)))
    elif key == "BN":
        chosen = set(_own_parameters(model, lambda m: isinstance(m, NORM_LAYERS)))
    elif key == "LAYER1":
        chosen = set(first_stage(model))
    else:
        pattern = _compile(group, "parameter group")
        chosen = {n for n in params if pattern.search(n)}
    selected = [n for n in params if n in chosen]
    if not selected:
        why = {"CLF": "no nn.Linear (pass clf= a module name or regex)" if not clf else f"clf={clf!r} matches nothing",
               "FEAT": "FEAT is everything outside CLF, and CLF is empty" if not classifier_parameters(model, clf)
               else "every trainable parameter is in CLF",
               "LAYER1": "no repeated blocks and no pooling or strided convolution (pass a regex)",
               "CONV": "no convolution layer", "BN": "no BatchNorm/GroupNorm/LayerNorm with affine parameters",
               "ALL": "no trainable parameter"}.get(key, "no parameter name matches")
        raise GroupError(f"parameter group {group!r} selects no parameter of this model: {why} "
                         f"(groups: {', '.join(GROUP_NAMES)} or a regex over names like {next(iter(params), '')!r})")
    return selected


def parameter_roles(model: nn.Module, clf: str | None = None) -> dict[str, str]:
    """Every parameter's role (one of :data:`ROLES`, in ``named_parameters`` order), the one classification of
    parameters for per-group statistics and sign consistency: ``bn_weight`` / ``bn_bias`` (BN group:
    normalization layers), ``classifier_weight`` / ``classifier_bias`` (CLF: the last ``nn.Linear``, e.g. a
    FedSign model's ``classifier``, or ``clf``), ``other_weight`` / ``other_bias``, and ``other`` for
    parameters named neither weight nor bias (ViT's ``class_token``, ``pos_embedding``)."""
    bn = set(_own_parameters(model, lambda m: isinstance(m, NORM_LAYERS)))
    head = set(classifier_parameters(model, clf))
    roles = {}
    for name, _ in model.named_parameters():
        local = name.rsplit(".", 1)[-1]
        kind = "bn" if name in bn else "classifier" if name in head else "other"
        roles[name] = f"{kind}_{local}" if local in ("weight", "bias") else "other"
    return roles
