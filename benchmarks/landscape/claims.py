"""The paper's valley claims (C1-C8): the verdict rules, the rows per network from the suites' ``numbers.json``
files, and the ``CLAIMS.md`` / ``claims_table.md`` writer (``benchmarks/landscape_figures.py --claims``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedsign.data import DATASETS
from fedsign.landscape import COMMON_NOISES, DIRECTION_SETS, SPECIAL_DIRECTIONS, plots

from .bn_suite import BN_SGD, BN_SMALL_BATCH
from .common import FIG7_FILTER_1D, FIG7_SCALES, NETS
from .trained_suite import DATASET_TITLES

CLAIM_TEXT = {
    "C1": "sign-consistent noise ⇒ flatter positive side (all 7 noises)",
    "C2": "raw noises ≈ symmetric valleys (the paper's exception: positive-mean noises on BN nets)",
    "C3": "asymmetry grows monotonically with the ratio r of sign-consistent elements",
    "C4": "special directions: θ0, θf, sign(θf), sign(θf-μ) asymmetric; sgp(θf), sgp(θf-μ) not",
    "C5": "BN weights init ones / U(0,1) ⇒ asymmetric {0,1}-noise valley; G(0,0.1) ⇒ symmetric "
          "(noise groups: this project's reading)",
    "C6": "interpolation: the endpoint more sign-consistent with its outward direction has the flatter outer side "
          "(this project's reading)",
    "C7": "soups: a pre-trained start ⇒ higher SSR-AB and a positive soup gap (random init: lower, negative)",
    "C8": "Listing 2 (digits softmax): sign-consistent noise asymmetric, Gaussian symmetric",
}
# The verdict rule of each claim, as the code below applies it (CLAIMS.md prints these).
NOISE_RULES = (
    "Error asymmetry = mean test error over λ ≤ 0 − mean over λ ≥ 0 (λ = 0 in both): > 0 means the positive "
    "side is flatter.",
    "A quantity is *beyond noise* when its mean exceeds a threshold: the larger of 3 test images' worth of "
    "error (3 / the test images per point) and twice its standard error. The standard error is over seeds × "
    "noise draws for Fig. 3's noise asymmetries (each draw of each seed one value; a direction the same in "
    "every draw, {1}, one value per seed) and over seeds for every other quantity. Values are printed as "
    "mean ± SE.",
)
RULES = {
    "C1": "holds when all 7 sign-consistent noises are positive beyond noise; contradicted when any is negative "
          "beyond noise; else within noise.",
    "C2": "the 3 zero-mean raw noises (G(0,1), U(−1,1), {−1,0,1}) must be within noise. The 4 positive-mean "
          "ones (G(1,1), U(0,1), {0,1}, {1}) must be within noise too, except that on a BN net a positive "
          "asymmetry along them is the paper's own exception (§4.1: \"the last four noise directions show slight "
          "asymmetry when s = 0.2\"; App. A.4: only with BN, whose all-positive weights agree in sign with the "
          "noise), reported as such. Measured at s = 1 only (the paper's exception is stated for s = 0.2). A raw "
          "noise that puts the network at chance on both sides (its recorded curve, the first draw of every seed: "
          "test error ≥ 1 − 1/classes − 0.05 at every λ ≠ 0, below it at λ = 0) is reported as saturated and not "
          "counted: an asymmetry between two chance levels says nothing about the valley's shape.",
    "C3": "per seed, the asymmetry at each r of the grid; holds when it rises from the first r to the last "
          "beyond noise and no step between neighbouring r falls beyond noise (the paper: monotone over "
          "r ∈ {0, 0.1, …, 1}); contradicted when the rise or any step is negative beyond noise. A grid of 3 "
          "values (the BN suite) tests monotonicity only at those 3 points.",
    "C4": "holds when θ0, θf, sign(θf), sign(θf − μ) are positive beyond noise and sgp(θf), sgp(θf − μ) "
          "within noise; contradicted when one of the first four is negative beyond noise or an sgp direction "
          "is beyond noise; else within noise.",
    "C5": "holds when ones and U(0,1) are positive beyond noise (NS and Filter-NS) and G(0, 0.1) within "
          "noise; contradicted when ones or U(0,1) is negative or G(0, 0.1) beyond noise. The paper's Fig. 7 "
          "does not name the noised parameters and explains the asymmetry by the BN weights; testing both the "
          "BN parameters (s = 1) and ALL parameters (s = 0.2) is this project's reading.",
    "C6": "this project's reading of §4.2.2, which shows one pair (the small-batch model in a sharper, nearly "
          "symmetric valley, the large-batch one flatter and asymmetric) and says that sign consistency "
          "matters to the symmetry, without an endpoint rule: the endpoint whose SSR with its outward "
          "direction (−d at θ1, +d at θ2, d = θ2 − θ1) is higher should have the smaller error rise beyond "
          "it; holds / contradicted when the difference of the two rises is beyond noise with / against that "
          "sign.",
    "C7": "holds when the pre-trained start gives a higher SSR-AB on every seed, a gap not negative beyond "
          "noise, and a gap above the random-init arm's beyond noise; contradicted when its gap is below the "
          "random-init arm's beyond noise; else within noise.",
    "C8": "holds when the sign-consistent error asymmetry is above 0.02 and the Gaussian one within ±0.02.",
}
COMMON = tuple(DIRECTION_SETS["common"])
POSITIVE_MEAN = ("gauss1", "uniform01", "binary", "ones")  # the paper's "last four" noises of Fig. 3
SATURATION_MARGIN = 0.05  # a valley side within this of chance error is at chance (C2)


class Stat:
    """A measured quantity over seeds (and noise draws): its mean and a noise threshold, the larger of
    ``base`` (3 test images' worth of error) and twice its standard error over the seeds."""

    def __init__(self, values, base: float):
        self.values = [float(v) for v in np.ravel(values)]
        self.mean = float(np.mean(self.values))
        self.se = float(np.std(self.values, ddof=1) / np.sqrt(len(self.values))) if len(self.values) > 1 else 0.0
        self.threshold = max(base, 2 * self.se)

    def __str__(self) -> str:
        if len(self.values) == 1:
            return f"{self.mean:+.3f}"
        return f"{self.mean:+.3f}±{self.se:.3f}"

    @property
    def positive(self) -> bool:
        return self.mean > self.threshold + 1e-9  # float fuzz: a value at the threshold is noise

    @property
    def negative(self) -> bool:
        return self.mean < -self.threshold - 1e-9


def _joined(stats) -> str:
    return " ".join(str(v) for v in stats)


def _amounts(stats: dict[str, Stat]) -> str:
    """Named values for a verdict's detail, e.g. 'U(0,1) -0.008±0.004, {1} -0.017'."""
    return ", ".join(f"{name} {stat}" for name, stat in stats.items())


def _c6(runs: list[dict], base: float) -> tuple[str, str]:
    rise1, rise2, out1, out2 = [], [], [], []
    for f8 in runs:
        lam, err = np.asarray(f8["lambdas"]), np.asarray(f8["error"])
        rise1.append(err[lam < 0].mean() - err[np.argmin(np.abs(lam))])
        rise2.append(err[lam > 1].mean() - err[np.argmin(np.abs(lam - 1))])
        out1.append(1 - f8["ssr"]["theta1_d"]["all"])  # outward directions: -d at θ1, +d at θ2
        out2.append(f8["ssr"]["theta2_d"]["all"])
    diff = Stat(np.subtract(rise1, rise2), base)  # > 0: θ2's outer side is the flatter one
    text = (f"SSR(θ1,-d) {np.mean(out1):.3f}, SSR(θ2,d) {np.mean(out2):.3f}; error rise beyond θ1 "
            f"{np.mean(rise1):+.3f}, beyond θ2 {np.mean(rise2):+.3f} (difference {diff})")
    if not (diff.positive or diff.negative):
        return text, "within noise"
    agrees = diff.positive == (np.mean(out2) > np.mean(out1))
    return text, "holds" if agrees else f"contradicted (the less sign-consistent side flatter by {abs(diff.mean):.3f})"


def _fig7_rows(runs: list[dict], base: float) -> list[tuple[str, str]]:
    """C5 per noise group (BN, ALL): (measured, verdict); none without runs."""
    out = []
    if not runs:
        return out
    for group in ("BN", "ALL"):
        stat = {(i, n): Stat([r[i]["asymmetry"][group][n] for r in runs], base)
                for i in runs[0] for n in ("ns", "filter")}
        text = f"noise on {group}: " + "; ".join(f"{i} NS {stat[i, 'ns']} Filter-NS {stat[i, 'filter']}"
                                                 for i in runs[0])
        pos = {k: v for k, v in stat.items() if k[0] in ("ones", "uniform")}
        sym = {k: v for k, v in stat.items() if k[0] == "gaussian"}
        off = {f"{i} {'NS' if n == 'ns' else 'Filter-NS'}": v for (i, n), v in {**pos, **sym}.items()
               if v.negative or ((i, n) in sym and v.positive)}
        verdict = ("holds" if all(v.positive for v in pos.values()) and not off
                   else f"contradicted ({_amounts(off)})" if off else "within noise")
        out.append((text, verdict))
    return out


def saturated_noises(runs: list[dict], classes: int) -> list[str]:
    """The raw noises whose recorded valley (``fig3_record``, s = 1) is at chance on both sides on every seed:
    test error ≥ 1 − 1/classes − :data:`SATURATION_MARGIN` at every λ ≠ 0 and below that at λ = 0."""
    level = 1 - 1 / classes - SATURATION_MARGIN
    out = []
    for noise in COMMON:
        curves = [(r.get("fig3_record") or {}).get("curves", {}).get(noise, {}).get("scales", {}).get("1")
                  for r in runs]
        if not runs or any(c is None for c in curves):
            continue
        at_chance = []
        for r, curve in zip(runs, curves):
            lam, err = np.asarray(r["fig3_record"]["lambdas"]), np.asarray(curve["error"])
            zero = int(np.argmin(np.abs(lam)))
            at_chance.append(err[zero] < level and bool(np.all(np.delete(err, zero) >= level)))
        if all(at_chance):
            out.append(noise)
    return out


def _c2_verdict(raw: dict[str, Stat], has_bn: bool, saturated: tuple[str, ...] = ()) -> str:
    """C2 (rule in :data:`RULES`): zero-mean noises symmetric; positive-mean noises symmetric, or
    positive on a BN net (the paper's own exception); ``saturated`` noises (at chance on both sides) not
    counted."""
    counted = {n: v for n, v in raw.items() if n not in saturated}
    note = (f"; {', '.join(COMMON_NOISES[n] for n in saturated)} at chance on both sides at s = 1, not counted"
            if saturated else "")
    off = {COMMON_NOISES[n]: v for n, v in counted.items() if (v.positive or v.negative)
           and not (has_bn and n in POSITIVE_MEAN and v.positive)}
    if off:
        return f"contradicted ({_amounts(off)} asymmetric{note})"
    excepted = {COMMON_NOISES[n]: v for n, v in counted.items() if v.positive or v.negative}
    if excepted:
        return f"holds (the paper's BN exception: {_amounts(excepted)} positive{note})"
    return f"holds ({note[2:]})" if saturated else "holds"


def _c3_verdict(per_seed: list[list[float]], base: float, ratios: list[float]) -> str:
    """C3 (rule in :data:`RULES`): per-seed asymmetries over the r grid ``ratios``; rises from the first r to
    the last beyond noise with no step down beyond noise."""
    overall = Stat([a[-1] - a[0] for a in per_seed], base)
    steps = {f"r {ratios[k]:g}→{ratios[k + 1]:g}": Stat([a[k + 1] - a[k] for a in per_seed], base)
             for k in range(len(ratios) - 1)}
    falls = {**({f"r {ratios[0]:g}→{ratios[-1]:g}": overall} if overall.negative else {}),
             **{k: v for k, v in steps.items() if v.negative}}
    if falls:
        return f"contradicted (falls: {_amounts(falls)})"
    return "holds" if overall.positive else f"within noise (rise {overall})"


def _c7_verdict(gain: Stat, pretrained_gap: Stat, ssr_higher_every_seed: bool) -> str:
    """C7 (rule in :data:`RULES`): ``gain`` = pre-trained gap - random-init gap, per seed."""
    if gain.positive and not pretrained_gap.negative and ssr_higher_every_seed:
        return "holds"
    return f"contradicted (gap gain {gain})" if gain.negative else "within noise"


def fig3_values(draws: list[list[float]]) -> list[float]:
    """Fig. 3's values of one noise over seeds (``draws[seed]``: its asymmetry per noise draw): every draw of
    every seed, or one value per seed for a direction that is the same in every draw ({1})."""
    if all(len(set(seed)) == 1 for seed in draws):
        return [seed[0] for seed in draws]
    return [v for seed in draws for v in seed]


def net_rows(label: str, runs: list[dict], base: float, has_bn: bool,
             classes: int = 10) -> list[tuple[str, str, str, str]]:
    """C1-C7 rows of one network over its seeds (``runs``: one result dict per seed; ``has_bn``: the net
    has BatchNorm, for C2's exception; ``classes``: its dataset's, for C2's chance level)."""
    rows = []
    fig3 = {k: Stat(fig3_values([r["fig3"][k] for r in runs]), base) for k in runs[0]["fig3"]}
    sc = [fig3[f"sc-{n}"] for n in COMMON]
    negative = {f"sc {COMMON_NOISES[n]}": v for n, v in zip(COMMON, sc) if v.negative}
    v1 = "holds" if all(v.positive for v in sc) else f"contradicted ({_amounts(negative)})" if negative else \
        f"within noise ({sum(v.positive for v in sc)}/7 beyond noise, {min(v.mean for v in sc):+.3f}…" \
        f"{max(v.mean for v in sc):+.3f})"
    rows.append(("C1", label, f"sc asym {_joined(sc)}", v1))
    raw = dict(zip(COMMON, (fig3[n] for n in COMMON)))
    rows.append(("C2", label, f"raw asym {_joined(raw.values())}",
                 _c2_verdict(raw, has_bn, tuple(saturated_noises(runs, classes)))))
    ratios = runs[0]["fig4"]["ratios"]
    r_asym = [Stat([r["fig4"]["error_asymmetry"][k] for r in runs], base) for k in range(len(ratios))]
    rows.append(("C3", label, "r " + "/".join(f"{x:g}" for x in ratios) + f": asym {_joined(r_asym)}",
                 _c3_verdict([r["fig4"]["error_asymmetry"] for r in runs], base, ratios)))
    expected = {"init": True, "final": True, "sign": True, "sign-mu": True, "sgp": False, "sgp-mu": False}
    f5 = {k: Stat([r["fig5"][k] for r in runs], base) for k in expected}
    hits = sum(f5[k].positive if want else not (f5[k].positive or f5[k].negative) for k, want in expected.items())
    wrong = {SPECIAL_DIRECTIONS[k]: f5[k] for k, want in expected.items()
             if (want and f5[k].negative) or (not want and (f5[k].positive or f5[k].negative))}
    rows.append(("C4", label, f"asym {_joined(f5.values())} ({hits}/6 as predicted)",
                 "holds" if hits == 6 else f"contradicted ({_amounts(wrong)})" if wrong else "within noise"))
    fig8 = [r["fig8"] for r in runs if "fig8" in r]  # the trained suite: the first seeds only
    if fig8:
        text, verdict = _c6(fig8, base)
        rows.append(("C6", label, _subset(len(fig8), len(runs)) + text, verdict))
    if runs[0].get("fig11"):
        arm = {(a, k): Stat([r["fig11"][a][k] for r in runs], base) for a in ("random_init", "pretrained")
               for k in ("ssr_ab", "gap")}
        gain = Stat([r["fig11"]["pretrained"]["gap"] - r["fig11"]["random_init"]["gap"] for r in runs], base)
        ssr_up = np.mean([r["fig11"]["pretrained"]["ssr_ab"] > r["fig11"]["random_init"]["ssr_ab"] for r in runs])
        verdict = _c7_verdict(gain, arm["pretrained", "gap"], ssr_up == 1)
        rows.append(("C7", label, f"random init: SSR-AB {arm['random_init', 'ssr_ab'].mean:.4f}, gap "
                                  f"{arm['random_init', 'gap']}; pre-trained: SSR-AB "
                                  f"{arm['pretrained', 'ssr_ab'].mean:.4f}, gap {arm['pretrained', 'gap']}", verdict))
    fig7 = [r["fig7"] for r in runs if r.get("fig7")]
    rows += [("C5", label, _subset(len(fig7), len(runs)) + text, verdict) for text, verdict in _fig7_rows(fig7, base)]
    return rows


def _subset(measured: int, seeds: int) -> str:
    return "" if measured == seeds else f"{measured} of {seeds} seeds, "


def claim_rows(cnn: dict | None, bn_seeds: list[dict]) -> list[tuple[str, str, str, str]]:
    """(claim, network, measured, verdict) rows from the cnn suite's numbers and the BN suite's per-seed numbers."""
    rows: list[tuple[str, str, str, str]] = []
    if cnn:
        base = 3 / cnn["scale"]["test_samples"]
        res = {"fig3": {k: [v["asymmetry"]["1"]] for k, v in cnn["fig3"]["summary"].items()},
               "fig4": cnn["fig4"]["sweep"],
               "fig5": {k: v["asymmetry"]["1"] for k, v in cnn["fig5"]["summary"].items()},
               "fig8": cnn["fig8"]}
        rows += net_rows("cnn (MNIST, no BN; 1 seed)", [res], base, has_bn=False)
        checkpoints = cnn["fig11"]["checkpoints"]
        rows.append(("C7", "cnn (MNIST, no BN; 1 seed)", "random init only: " + ", ".join(
            f"E{c['epoch']} SSR-AB {c['ssr_ab']['all']:.3f} gap {c['gap']:+.3f}" for c in checkpoints),
            "not tested (no pre-trained arm in that run)"))
        rows += [("C5", "resnet20 (MNIST, cnn suite, 1 seed; Filter-NS 1-D rule 'element')", *row)
                 for row in _fig7_rows([cnn["fig7"]], 3 / cnn["scale"]["bn_test_samples"])]
        d = cnn["fig29"]["error_asymmetry"]
        rows.append(("C8", "softmax regression (sklearn digits, 10 draws)",
                     f"error asym: sign-consistent {d['sign_consistent']:+.3f}, Gaussian {d['gaussian']:+.3f}",
                     "holds" if d["sign_consistent"] > 0.02 and abs(d["gaussian"]) <= 0.02 else "contradicted"))
    if bn_seeds:
        base = 3 / bn_seeds[0]["scale"]["test_samples"]
        for key in bn_seeds[0]["nets"]:
            runs = [n["nets"][key] for n in bn_seeds if key in n["nets"]]
            rows += net_rows(f"{key} (CIFAR-10; {len(runs)} seeds × {bn_seeds[0]['scale']['noise_seeds']} draws)",
                             runs, base, has_bn=NETS[key][1])
    return sorted(rows, key=lambda row: row[0])


def trained_rows(trained: list[dict]) -> list[tuple[str, str, str, str]]:
    """(claim, network, measured, verdict) rows of the trained suite: one network per dataset over its seeds,
    the noise floor 3 test images' worth of its test size."""
    rows: list[tuple[str, str, str, str]] = []
    for dataset in dict.fromkeys(n["dataset"] for n in trained):
        seeds = [n for n in trained if n["dataset"] == dataset]
        scale = seeds[0]["scale"]
        for key in dict.fromkeys(k for n in seeds for k in n["nets"]):
            runs = [n["nets"][key] for n in seeds if key in n["nets"]]
            acc = np.mean([r["network"]["test_accuracy"] for r in runs])
            rows += net_rows(f"{key} ({DATASET_TITLES[dataset]}, trained, test acc {acc:.3f}; {len(runs)} seeds × "
                             f"{scale['noise_seeds']} draws)", runs, 3 / scale["test_samples"], has_bn=NETS[key][1],
                             classes=DATASETS[dataset].num_classes)
    return sorted(rows, key=lambda row: row[0])


def claims_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| claim | network | measured: error asymmetry, mean (± SE over seeds) | verdict |", "|---|---|---|---|"]
    lines += [f"| {c}: {CLAIM_TEXT[c]} | {net} | {text} | **{verdict}** |" for c, net, text, verdict in rows]
    return "\n".join(lines) + "\n"


def _row_name(network: str, measured: str) -> str:
    """A verdict row's network in a summary: 'resnet20 (CIFAR-10)', 'cnn (MNIST)', plus the noise group of C5."""
    name, _, detail = network.partition(" (")
    data = next((d for d in ("Fashion-MNIST", "MNIST", "CIFAR-10", "sklearn digits", "digits") if d in detail), "")
    group = "noise on " + measured.split("noise on ", 1)[1].split(":")[0] if "noise on " in measured else ""
    return name + (f" ({data})" if data else "") + (f", {group}" if group else "")


def claim_summaries(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """One line per claim, produced from its verdict rows: the networks grouped by verdict, each with the
    verdict's detail (e.g. which noises were asymmetric)."""
    lines = []
    for claim in dict.fromkeys(c for c, *_ in rows):
        groups: dict[str, list[str]] = {}
        for _, network, measured, verdict in (r for r in rows if r[0] == claim):
            head, _, detail = verdict.partition(" (")
            groups.setdefault(head, []).append(_row_name(network, measured) + (f" ({detail}" if detail else ""))
        order = ("holds", "within noise", "contradicted", "not tested")
        parts = [f"{head} on {', '.join(groups[head])}" for head in sorted(groups, key=order.index)]
        lines.append(f"* **{claim}** ({CLAIM_TEXT[claim]}): " + "; ".join(parts) + ".")
    return lines


def _mean_accuracy(bn_seeds: list[dict]) -> dict[str, float]:
    return {key: float(np.mean([n["nets"][key]["test_accuracy"] for n in bn_seeds if key in n["nets"]]))
            for key in bn_seeds[0]["nets"]}


def pending_description(trained: list[dict]) -> list[str]:
    """A warning paragraph naming the networks of the trained suite's scale not analysed yet (none: no lines)."""
    analysed = {(n["dataset"], key, n["seed"]) for n in trained for key in n["nets"]}
    suite = [(g["dataset"], key, seed) for g in trained[0]["scale"]["groups"] for key in g["nets"] for seed in g["seeds"]]
    pending = [f"{DATASET_TITLES[d]} {key} seed {seed}" for d, key, seed in suite if (d, key, seed) not in analysed]
    if not pending:
        return []
    return [f"**The trained suite is not complete**: {len(suite) - len(pending)} of {len(suite)} networks analysed; "
            f"still to come: {', '.join(pending)}. The trained verdicts below read only the analysed networks "
            "(each row says how many seeds), and change as the rest arrive.", ""]


def trained_description(trained: list[dict]) -> list[str]:
    """'What was run' for the trained suite, read from its numbers.json files (or that there are none yet)."""
    if not trained:
        return ["**Trained networks**: no numbers yet. `benchmarks/landscape_figures.py --suite trained` "
                "(benchmarks/README.md) trains resnet20, vgg8_bn and their BN-free twins to convergence and writes "
                "`trained/<dataset>-seed<k>/numbers.json`; until then every verdict below is on the reduced-scale "
                "networks described next, the BN ones near chance.", ""]
    sc = trained[0]["scale"]
    sgd = sc["sgd"]
    nets = []
    for dataset in dict.fromkeys(n["dataset"] for n in trained):
        seeds = [n for n in trained if n["dataset"] == dataset]
        for key in dict.fromkeys(k for n in seeds for k in n["nets"]):
            metas = [n["nets"][key]["network"] for n in seeds if key in n["nets"]]
            nets.append(f"{key} on {DATASET_TITLES[dataset]} {np.mean([m['test_accuracy'] for m in metas]):.3f} "
                        f"({metas[0]['epochs']} epochs, seeds {', '.join(str(m['seed']) for m in metas)}, "
                        f"{np.mean([m['train_seconds'] for m in metas]) / 60:.0f} min of "
                        f"{metas[0]['torch_threads']} torch thread(s) each)")
    extra = "the first " + ", ".join(f"{g['extra_seeds']} {DATASET_TITLES[g['dataset']]}" for g in sc["groups"]) + \
        " seed(s) of each network"
    return [
        *pending_description(trained),
        f"**Trained suite** (`benchmarks/landscape_figures.py --suite trained`, in `trained/<dataset>-seed<k>/`, "
        f"weights cached outside git): every network trained on its full training split through `train_local`, "
        f"SGD batch {sgd['batch_size']}, momentum {sgd['momentum']}, weight decay {sgd['weight_decay']}, lr "
        f"{sgd['lr']} on a {sgd['lr_schedule']} schedule over the epochs (the paper's A.3). Test accuracy (full "
        f"test set, mean over seeds): " + "; ".join(nets) + f". Every point is evaluated on "
        f"{sc['test_samples']:,} seeded test images with BN statistics recalibrated on {sc['recal_samples']:,} "
        f"training images. Valleys: noise on ALL parameters, NS-normalized, s = 1, {sc['points']} λ points in "
        f"[−1, 1]; Fig. 3 {sc['noise_seeds']} noise draws per model; Fig. 4 r ∈ "
        f"{{{', '.join(f'{r:g}' for r in sc['ratios'])}}}; Fig. 8 θ1 trained with batch {sc['small_batch']} on "
        f"{extra}, θ2 = θf; Fig. 11 the two halves of the training split, {sc['soup_epochs']} epoch(s) at lr "
        f"{sc['soup_lr']:g} from θ0 and from θf; Fig. 7 on {', '.join(sc['fig7_nets'])} ({extra}): BN weights "
        f"initialized to ones, U(0,1), G(0,0.1), each trained like θf.",
        "",
    ]


def run_description(cnn: dict | None, bn_seeds: list[dict]) -> list[str]:
    """'What was run', every figure read from the numbers.json files."""
    lines = []
    if bn_seeds:
        sc = bn_seeds[0]["scale"]
        minutes = [n["seconds"]["total"] / 60 for n in bn_seeds]
        acc = _mean_accuracy(bn_seeds)
        seeds = ", ".join(str(n["seed"]) for n in bn_seeds)
        lines += [
            f"**BN suite** (`benchmarks/landscape_figures.py --suite bn --seed S`, seeds {seeds}, in `bn/` and "
            f"`bn-seed<S>/`; {min(minutes):.0f}–{max(minutes):.0f} min of one core per seed, one torch thread): "
            f"{', '.join(acc)} on CIFAR-10 (resnet20-nobn: resnet20 with every BatchNorm replaced by identity; "
            f"vgg8: vgg8_bn's layout without BN). θf is trained on the first {sc['train_samples']:,} images of a "
            f"seeded permutation of the training set for {sc['epochs']} epochs (SGD batch "
            f"{BN_SGD[True].batch_size}, momentum {BN_SGD[True].momentum}, weight decay {BN_SGD[True].weight_decay}, "
            f"lr {BN_SGD[True].lr} with BN, {BN_SGD[False].lr} without); every point is evaluated on "
            f"{sc['test_samples']} seeded test images with BN statistics recalibrated on {sc['recal_samples']} "
            f"training images. Valleys: noise on ALL parameters, NS-normalized, s = 1, {sc['points']} λ points in "
            f"[−1, 1]; Fig. 3 {sc['noise_seeds']} noise draws per seed; Fig. 4 r ∈ "
            f"{{{', '.join(f'{r:g}' for r in sc['ratios'])}}}; Fig. 8 θ1 trained with batch {BN_SMALL_BATCH}, "
            f"θ2 = θf; Fig. 11 two halves of {sc['soup_half']} further images, {sc['soup_epochs']} epochs each, "
            f"from the seeded initialization θf started from and from θf itself (pre-trained on other CIFAR-10 "
            f"images, not another dataset); Fig. 7 on {', '.join(sc['fig7_nets'])} only: BN weights initialized "
            f"to ones, U(0,1), G(0,0.1), {{0,1}} noise on " + " and on ".join(
                f"{g} (s = {FIG7_SCALES[g]:g}, Filter-NS 1-D rule `{FIG7_FILTER_1D[g]}`)" for g in FIG7_SCALES) + ".",
            "",
            "**This is a very small scale.** Test accuracy, mean over the seeds: "
            + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()) + " (chance 0.100). A contrast between the BN "
            "nets and their BN-free twins is therefore also a contrast between nets that trained more and nets "
            "that trained less; the verdicts are about these models, not converged ones.",
            "",
        ]
    if cnn:
        sc = cnn["scale"]
        lines += [
            f"**cnn suite** (`numbers.json`, seed {cnn['seed']}): the BN-free small cnn on MNIST "
            f"({sc['train_samples']:,} images, {sc['epochs']} epochs, test accuracy "
            f"{cnn['models']['cnn_bs256']['test_accuracy']:.3f}; {sc['test_samples']} test images, "
            f"{sc['points']} λ points, one noise draw, Fig. 4 over {sc['ratios']} values of r), Fig. 7 on "
            f"resnet20 / MNIST ({sc['bn_train_samples']:,} images, {sc['bn_epochs']} epochs, "
            f"{sc['bn_test_samples']} test images), Fig. 11 from a random initialization only, and Fig. 29 / "
            f"Listing 2 on sklearn digits ({sc['digits_draws']} draws).",
            "",
        ]
    return lines


def fl_section(records: list[dict]) -> list[str]:
    """The FL-valley tables from ``fl/*.json`` (``fedsign landscape fl``), every figure read from them."""
    lines = []
    for rec in records:
        cfg = rec["config"]
        title = rec["runs"][0]["label"].split("\n")[-1]
        lines += [f"### `fl/{cfg['name']}.json`: {title}", "",
                  f"`fedsign landscape fl` on {len(rec['runs'])} runs (" + ", ".join(
                      f"`{Path(r['run']).name}`" for r in rec["runs"]) + f"), {cfg['test_samples']:,} test images "
                  f"per point, noise on {cfg['group']} at scale {cfg['scale']:g}; θ0 rebuilt from each run's "
                  "config.json. One seed.", "",
                  "| run | test acc, last round (%) | raw-noise asymmetry | sign-consistent asymmetry | "
                  "client SSR, last round |", "|---|---|---|---|---|"]
        notes = []
        for run in rec["runs"]:
            asym = {n: c["scales"][f"{cfg['scale']:g}"]["asymmetry"]["error"]["asymmetry"]
                    for n, c in run["valleys"]["curves"].items()}
            raw = {n: asym[n] for n in COMMON}
            sc = [asym[f"sc-{n}"] for n in COMMON]
            last = run["ssr_clients"][-1]
            name = run["label"].split("\n")[0]
            lines.append(f"| {name} | {100 * last['accuracy']:.2f} | {min(raw.values()):+.3f} … "
                         f"{max(raw.values()):+.3f} | {min(sc):+.3f} … {max(sc):+.3f} | {last['ssr_clients']:.4f} |")
            widest = max(raw, key=lambda n: abs(raw[n]))
            notes.append(f"{name}: sign-consistent asymmetry > 0 along {sum(v > 0 for v in sc)} of 7 noises "
                         f"(smallest {min(sc):+.3f}); largest raw-noise |asymmetry| {raw[widest]:+.3f} ({widest})")
        lines += ["", "Per model: " + "; ".join(notes) + ".", ""]
    return lines


CLAIMS_HEADER = """# The paper's valley claims, measured: verdicts per network

Generated by `benchmarks/landscape_figures.py --claims` from the committed `numbers.json` files (and `fl/*.json`):
each row is one claim of the paper (§4–§6.1, App. D) measured on one network, with the numbers and a verdict —
**holds**, **contradicted** or **within noise** — by the rules below; the summaries under "Reading" are produced
from the rows. Nothing here is typed by hand; edit the code, not this file.
"""


REDUCED_SCALE_NOTE = ("These are the reduced-scale runs: the BN suite's CIFAR-10 networks are near chance and the "
                      "MNIST cnn suite is small; they are kept for comparison, and the verdicts above, on trained "
                      "networks, are the ones that speak to the paper.")


def claims_document(cnn: dict | None, bn_seeds: list[dict], fl_records: list[dict], trained: list[dict]) -> str:
    """CLAIMS.md: the trained suite's verdicts first (when it has numbers), then the reduced-scale ones."""
    rows = claim_rows(cnn, bn_seeds)
    lines = [CLAIMS_HEADER, "## What was run", "", *trained_description(trained), *run_description(cnn, bn_seeds),
             "## Rules", "", *(f"* {rule}" for rule in NOISE_RULES), *(f"* {c}: {rule}" for c, rule in RULES.items()),
             ""]
    if trained:
        first = trained_rows(trained)
        lines += ["## Verdicts on trained networks", "", claims_table(first), "### Reading", "",
                  *claim_summaries(first), "", "## Verdicts at reduced scale (near-chance BN networks)", "",
                  REDUCED_SCALE_NOTE, "", claims_table(rows), "### Reading", "", *claim_summaries(rows), ""]
    else:
        lines += ["## Verdicts", "", claims_table(rows), "## Reading", "", *claim_summaries(rows), ""]
    if bn_seeds:
        arms = [n["nets"][k]["fig11"][a]["ssr_ab"] for n in bn_seeds for k in n["nets"]
                for a in ("random_init", "pretrained")]
        lines += [f"C7 at this scale: SSR-AB is {min(arms):.4f}–{max(arms):.4f} in both arms of every BN-suite "
                  "net and seed, so the halves hardly leave their start; `fedsign landscape soups --init` runs the "
                  "paper's contrast with longer fine-tuning. What would settle the open rows: converged CIFAR-10 "
                  "models (tens of epochs on the full training set, i.e. a GPU) and ≥ 1,000 test images per "
                  "point.", ""]
    if fl_records:
        lines += ["## The valley of FL models", "", *fl_section(fl_records)]
    return "\n".join(lines).rstrip() + "\n"


def read_numbers(out: Path) -> dict:
    """The suites' numbers in ``out``: ``numbers.json`` (cnn suite), every ``bn*/numbers.json`` (BN suite, one
    per seed: ``bn`` for seed 0, ``bn-seed<k>`` for the others), ``trained/*/numbers.json`` (trained suite) and
    ``fl/*.json``, as :func:`claims_document`'s arguments."""
    cnn_path = out / "numbers.json"
    return {"cnn": json.loads(cnn_path.read_text()) if cnn_path.is_file() else None,
            "bn_seeds": [json.loads(p.read_text()) for p in sorted(out.glob("bn*/numbers.json"))],
            "fl_records": [json.loads(p.read_text()) for p in sorted(out.glob("fl/*.json"))],
            "trained": [json.loads(p.read_text()) for p in sorted(out.glob("trained/*/numbers.json"))]}


def table_rows(numbers: dict) -> list[tuple[str, str, str, str]]:
    """claims_table.md's rows: the trained suite's first, then the reduced-scale ones."""
    return trained_rows(numbers["trained"]) + claim_rows(numbers["cnn"], numbers["bn_seeds"])


def write_claims(out: Path) -> Path:
    """``claims_table.md`` and ``CLAIMS.md`` (:func:`claims_document`) from :func:`read_numbers`, and the Fig. 11
    PNG of every BN-suite and trained-suite folder."""
    numbers = read_numbers(out)
    (out / "claims_table.md").write_text(claims_table(table_rows(numbers)))
    path = out / "CLAIMS.md"
    path.write_text(claims_document(**numbers))
    for numbers_path in sorted(out.glob("bn*/numbers.json")) + sorted(out.glob("trained/*/numbers.json")):
        record = json.loads(numbers_path.read_text())  # Fig. 11, drawn from the numbers
        nets, where = record["nets"], "CIFAR-10"
        if "dataset" in record:  # the trained suite: each panel titled with its network's test accuracy
            nets = {f"{k} (test acc {v['network']['test_accuracy']:.3f})": v for k, v in nets.items()}
            where = f"{DATASET_TITLES[record['dataset']]}, trained networks"
        plots.plot_soup_arms(nets, numbers_path.parent / "fig11_soups.png",
                             f"Fig. 11-style on {where}: two halves from a random init vs from a pre-trained θf")
    return path
