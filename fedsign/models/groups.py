"""Parameter groups: which role each named parameter plays (BN / classifier / other, weight / bias)."""

from __future__ import annotations

from torch import nn

from .common import ModelConfigError

PARAM_GROUPS = (
    "bn_weight",
    "bn_bias",
    "classifier_weight",
    "classifier_bias",
    "other_weight",
    "other_bias",
)


def parameter_groups(model: nn.Module) -> dict[str, str]:
    """Map every name of ``model.named_parameters()`` (same order) to one of :data:`PARAM_GROUPS`.

    BN = parameters owned by a BatchNorm module; classifier = parameters of ``model.classifier``
    (the final ``nn.Linear``; a model without a ``classifier`` attribute has no classifier groups);
    everything else is ``other_*``. Raises ``ModelConfigError`` (a ValueError) for a parameter
    whose own name is neither ``weight`` nor ``bias``.
    """
    classifier = getattr(model, "classifier", None)
    owner: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            owner.setdefault(id(p), (module, local))
    groups: dict[str, str] = {}
    for name, p in model.named_parameters():
        module, local = owner[id(p)]
        if local not in ("weight", "bias"):
            raise ModelConfigError(
                f"parameter {name!r} is neither a weight nor a bias; parameter_groups cannot classify it"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            kind = "bn"
        elif classifier is not None and module is classifier:
            kind = "classifier"
        else:
            kind = "other"
        groups[name] = f"{kind}_{local}"
    return groups
