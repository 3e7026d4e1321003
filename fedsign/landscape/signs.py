"""Sign consistency between models: pure functions over ``{name: tensor}`` dicts."""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch
from torch import Tensor


def sign_agreement(a: Tensor, b: Tensor) -> Tensor:
    """Boolean tensor: where ``a`` and ``b`` have the same sign (``torch.sign``; 0 matches only 0)."""
    return torch.sign(a) == torch.sign(b)


def sign_consistency(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    groups: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Sign consistency ratio (SSR): the fraction of elements with equal sign.

    Returns ``{"all": ratio}`` over the keys both dicts share, plus one ratio per group
    when ``groups`` maps names to group labels (names missing from it are counted in
    ``all`` only). ``b``'s tensors may carry a leading dimension stacking several models
    of ``a``'s shapes: the ratio is then pooled over them, which is their mean SSR.
    """
    same: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    names = sorted(a.keys() & b.keys())
    agreements = [sign_agreement(a[name], b[name]) for name in names]
    counts_agree = torch.stack([s.sum() for s in agreements]).tolist() if names else []  # one host sync
    for name, same_sign, agree in zip(names, agreements, counts_agree):
        count = same_sign.numel()
        same["all"] += agree
        total["all"] += count
        if groups is not None and name in groups:
            same[groups[name]] += agree
            total[groups[name]] += count
    if not total["all"]:
        raise ValueError("sign_consistency: the two models share no parameter names")
    return {g: same[g] / total[g] for g in total}
