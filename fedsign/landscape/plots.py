"""PNG figures laid out like the paper's, each drawn from a record of this package."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

PANEL = (2.6, 2.2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_valleys(record: dict, rows: Sequence[Sequence[str]], path: str | Path, metric: str = "error",
                 title: str = "") -> Path:
    """Figs. 3 and 5: one panel per direction (rows as given), one curve per scale s over lambda;
    the panel title carries the direction and the asymmetry (neg - pos mean) at the largest scale."""
    plt = _pyplot()
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(PANEL[0] * ncols, PANEL[1] * len(rows)), squeeze=False)
    lambdas = record["lambdas"]
    for r, names in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(names):
                ax.axis("off")
                continue
            curve = record["curves"][names[c]]
            for s, values in curve["scales"].items():
                ax.plot(lambdas, values[metric], marker="o", ms=2, lw=1, label=f"s={s}")
            last = list(curve["scales"].values())[-1]["asymmetry"][metric]["asymmetry"]
            ax.set_title(f"{curve['label']}\nasym={last:+.3f}", fontsize=8)
            ax.set_xlabel("λ", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel(f"test {metric}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_fl_valleys(record: dict, path: str | Path) -> Path:
    """FL runs side by side (one column each): valleys of the final global model along the raw noises and
    along their sign-consistent versions, the interpolation from the initial to the final global model,
    and the clients' mean SSR with the global model per round."""
    plt = _pyplot()
    runs = record["runs"]
    fig, axes = plt.subplots(4, len(runs), figsize=(3.6 * len(runs), 2.5 * 4), squeeze=False)
    for c, run in enumerate(runs):
        valleys = run["valleys"]
        key = f"{valleys['scales'][0]:g}"
        for r, sign_consistent in enumerate((False, True)):
            ax = axes[r][c]
            for name, curve in valleys["curves"].items():
                if name.startswith("sc-") == sign_consistent:
                    ax.plot(valleys["lambdas"], curve["scales"][key]["error"], lw=1, label=curve["label"])
            ax.set_title(("sign-consistent" if sign_consistent else "raw") + f" noises, s={key}", fontsize=8)
            ax.set_xlabel("λ", fontsize=8)
            ax.set_ylabel("test error", fontsize=8)
            ax.legend(fontsize=5)
        ax = axes[2][c]
        interp = run["interpolation"]
        ax.plot(interp["lambdas"], interp["error"], marker="o", ms=2)
        for v in (0.0, 1.0):
            ax.axvline(v, color="gray", lw=0.6, ls="--")
        ax.set_title("θ0 → θT: " + run["first_model"].split(" (")[0], fontsize=7)
        ax.set_xlabel("λ in (1-λ)θ0 + λθT", fontsize=8)
        ax.set_ylabel("test error", fontsize=8)
        ax = axes[3][c]
        rows = [row for row in run["ssr_clients"] if row["ssr_clients"] is not None]
        ax.plot([row["round"] for row in rows], [row["ssr_clients"] for row in rows], marker="o")
        ax.set_xlabel("round", fontsize=8)
        ax.set_ylabel("client SSR vs global", fontsize=8)
        axes[0][c].annotate(run["label"], (0.5, 1.25), xycoords="axes fraction", ha="center", fontsize=8)
        for ax in axes[:, c]:
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ratio_sweep(record: dict, path: str | Path, title: str = "") -> Path:
    """Fig. 4: mean test error (and CE) over the positive and negative sides against the ratio r."""
    plt = _pyplot()
    sweep = record["sweep"]
    fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL[0] * 1.3, PANEL[1] * 1.3))
    for ax, metric in zip(axes, ("error", "loss")):
        ax.plot(sweep["ratios"], sweep[f"{metric}_pos_mean"], marker="o", label="λ ∈ [0, 1]")
        ax.plot(sweep["ratios"], sweep[f"{metric}_neg_mean"], marker="s", label="λ ∈ [-1, 0]")
        ax.set_xlabel("ratio r of sign-consistent elements")
        ax.set_ylabel(f"mean test {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_interpolation(record: dict, path: str | Path, names: tuple[str, str] = ("θ1", "θ2"),
                       title: str = "") -> Path:
    """Fig. 8: per-group mean ± std of both models, the interpolation error curve, and the sign
    consistency of each model with d = θ2 - θ1 per group."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(3 * PANEL[0] * 1.4, PANEL[1] * 1.4))
    groups = list(record["stats"]["theta1"])
    x = np.arange(len(groups))
    for k, (key, label) in enumerate((("theta1", names[0]), ("theta2", names[1]))):
        stats = record["stats"][key]
        axes[0].errorbar(x + (k - 0.5) * 0.2, [stats[g]["mean"] for g in groups],
                         yerr=[stats[g]["std"] for g in groups], fmt="o", capsize=3, label=label)
    axes[0].set_xticks(x, [g.replace("_", "\n") for g in groups], fontsize=7)
    axes[0].set_title("parameters: mean ± std", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(record["lambdas"], record["error"], marker="o", ms=2)
    for v in (0.0, 1.0):
        axes[1].axvline(v, color="gray", lw=0.6, ls="--")
    axes[1].set_xlabel("λ in (1-λ)θ1 + λθ2")
    axes[1].set_ylabel("test error")
    axes[1].set_title("interpolation", fontsize=9)
    ssr_groups = ["all"] + [g for g in groups if g in record["ssr"]["theta1_d"]]
    xs = np.arange(len(ssr_groups))
    for k, (key, label) in enumerate((("theta1_d", f"{names[0]} vs d"), ("theta2_d", f"{names[1]} vs d"))):
        axes[2].bar(xs + (k - 0.5) * 0.38, [record["ssr"][key][g] for g in ssr_groups], width=0.38, label=label)
    axes[2].set_xticks(xs, [g.replace("_", "\n") for g in ssr_groups], fontsize=7)
    axes[2].set_ylim(0, 1)
    axes[2].set_title("sign consistency with d = θ2 - θ1", fontsize=9)
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_soups(record: dict, path: str | Path, title: str = "") -> Path:
    """Fig. 11: interpolation accuracy per checkpoint; SSR-IA/IB/AB and the soup gap per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL[0] * 1.5, PANEL[1] * 1.5))
    rows = record["checkpoints"]
    for row in rows:
        axes[0].plot(record["lambdas"], row["accuracy"], marker="o", ms=2, label=f"E={row['epoch']}")
    axes[0].set_xlabel("λ in (1-λ)θA + λθB")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    epochs = [row["epoch"] for row in rows]
    for key, label in (("ssr_ia", "SSR-IA"), ("ssr_ib", "SSR-IB"), ("ssr_ab", "SSR-AB")):
        axes[1].plot(epochs, [row[key]["all"] for row in rows], marker="o", label=label)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("sign consistency ratio")
    gap = axes[1].twinx()
    gap.plot(epochs, [row["gap"] for row in rows], color="black", ls="--", marker="x", label="gap")
    gap.set_ylabel("Acc(soup) - mean Acc")
    lines = axes[1].get_legend_handles_labels()
    extra = gap.get_legend_handles_labels()
    axes[1].legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_soup_arms(nets: dict, path: str | Path, title: str = "") -> Path:
    """Fig. 11 with two starts per network (one panel each): accuracy of (1-λ)θA + λθB at λ = 0, 0.5, 1 from
    a random initialization and from a pre-trained model (``nets[name]["fig11"][arm]``), SSR-AB and gap in
    the legend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(nets), figsize=(3.0 * len(nets), 2.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], nets.items()):
        for arm, label in (("random_init", "random init"), ("pretrained", "pre-trained")):
            row = res["fig11"][arm]
            ax.plot([0.0, 0.5, 1.0], row["accuracy"], marker="o",
                    label=f"{label}: SSR-AB {row['ssr_ab']:.3f}, gap {row['gap']:+.3f}")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("λ in (1-λ)θA + λθB", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


BN_INIT_LABELS = {"ones": "BN w = 1", "uniform": "BN w ~ U(0,1)", "gaussian": "BN w ~ G(0,0.1)"}


def plot_bn_init(panels: dict, numbers: dict, scales: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Fig. 7: one column per BN-weight init: histograms of the BN weights at init and after training
    (``panels[init] = (w0, wf)``), then per noise group (``scales``: group -> s) the {0,1} valleys, NS and
    Filter-NS (``numbers[init]["records"][group]``, asymmetries in ``numbers[init]["asymmetry"][group]``)."""
    plt = _pyplot()
    rows = 1 + len(scales)
    fig, axes = plt.subplots(rows, len(panels), figsize=(3.2 * len(panels), 2.4 * rows), squeeze=False)
    for c, (init, (w0, wf)) in enumerate(panels.items()):
        ax = axes[0][c]
        bins = np.linspace(min(w0.min(), wf.min()), max(w0.max(), wf.max()), 40)
        ax.hist(w0, bins=bins, alpha=0.6, label="init")
        ax.hist(wf, bins=bins, alpha=0.6, label="trained")
        ax.set_title(f"{BN_INIT_LABELS.get(init, init)}: BN weights (acc {numbers[init]['test_accuracy']:.3f})",
                     fontsize=8)
        ax.legend(fontsize=7)
        for r, (group, s) in enumerate(scales.items(), start=1):
            ax = axes[r][c]
            record = numbers[init]["records"][group]
            for norm, label in (("ns", "NS"), ("filter", "Filter-NS")):
                ax.plot(record["lambdas"], record["curves"][norm]["scales"][f"{s:g}"]["error"], marker="o", ms=2,
                        lw=1, label=f"{label} (asym {numbers[init]['asymmetry'][group][norm]:+.3f})")
            ax.set_title(f"{{0,1}} noise on {group}, s={s:g}", fontsize=8)
            ax.set_xlabel("λ", fontsize=8)
            ax.set_ylabel("test error", fontsize=8)
            ax.legend(fontsize=7)
        for ax in axes[:, c]:
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


DIGITS_PANELS = (("gini", "GiniP"), ("trace_hessian", "Tr(H)"), ("first_order_text", "εᵀg (text)"),
                 ("second_order_text", "εᵀHε (text)"), ("first_order_listing", "Wnᵀg (Listing 2)"),
                 ("second_order_listing", "WnᵀHWn (Listing 2)"), ("loss", "Loss"), ("error", "Error"))


def plot_digits_demo(record: dict, path: str | Path) -> Path:
    """Fig. 29: the Listing-2 metrics over lambda, Gaussian noise (top) and sign-consistent (bottom); the
    first/second-order coefficients in both definitions (the text's εᵀg, εᵀHε; Listing 2's Wnᵀg, WnᵀHWn)."""
    plt = _pyplot()
    noises = list(record["noises"])
    fig, axes = plt.subplots(len(noises), len(DIGITS_PANELS), figsize=(2.4 * len(DIGITS_PANELS), 2.2 * len(noises)),
                             squeeze=False)
    for r, noise in enumerate(noises):
        for c, (key, label) in enumerate(DIGITS_PANELS):
            ax = axes[r][c]
            ax.plot(record["lambdas"], record["noises"][noise][key])
            ax.set_title(f"{label} ({noise})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_weight_patterns(record: dict, path: str | Path) -> Path:
    """Fig. 10: a class sample, then the weight pattern ``w + λ·sign(w)`` per λ (correlation with the
    class's mean input in the title)."""
    plt = _pyplot()
    n = len(record["lambdas"])
    fig, axes = plt.subplots(1, n + 1, figsize=(1.9 * (n + 1), 2.2))
    axes[0].imshow(record["sample"], cmap="gray")
    axes[0].set_title(f"digit {record['cls']}", fontsize=8)
    for ax, lam, pattern, corr in zip(axes[1:], record["lambdas"], record["patterns"], record["correlation"]):
        ax.imshow(pattern, cmap="gray")
        ax.set_title(f"λ={lam:+.1f}, r={corr:+.2f}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def plot_relu_simulation(sim: dict, path: str | Path) -> Path:
    """Fig. 27: histograms (500 bins) of (w + λ sign(w))^T h, one per lambda."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    for lam, values in zip(sim["lambdas"], sim["values"]):
        ax.hist(values, bins=500, alpha=0.6, label=f"lamb={lam}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_activation_confusion(record: dict, path: str | Path, title: str = "") -> Path:
    """Fig. 28: one 2 x 2 activation confusion matrix per lambda, "[diagonal sum]" in the title."""
    plt = _pyplot()
    n = len(record["lambdas"])
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.3), squeeze=False)
    for ax, lam, matrix, diag in zip(axes[0], record["lambdas"], record["matrices"], record["diagonal"]):
        ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"λ={lam:+.1f} [{diag:.2f}]", fontsize=8)
        ax.set_xticks([0, 1], ["on", "off"], fontsize=7)
        ax.set_yticks([0, 1], ["on", "off"], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_trace_curve(record: dict, path: str | Path, title: str = "") -> Path:
    """Hutchinson Hessian trace (± standard error) over lambda."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar(record["lambdas"], record["trace"], yerr=record["stderr"], marker="o", ms=3, capsize=2)
    ax.set_xlabel("λ")
    ax.set_ylabel("tr H (Hutchinson)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
