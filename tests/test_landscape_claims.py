"""The claim verdicts of benchmarks/landscape/claims.py: rules as their text states them, and CLAIMS.md
exactly what the code writes from the committed numbers (its summaries produced from the verdict rows)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LANDSCAPE = ROOT / "benchmarks" / "results" / "landscape"


@pytest.fixture(scope="module")
def lf():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package
    return importlib.import_module("benchmarks.landscape.claims")


BASE = 3 / 128  # 3 test images' worth, the BN suite's floor


def test_c7_accepts_a_pretrained_gap_within_noise_below_zero_and_refuses_one_beyond(lf):
    """RULES['C7']: 'a gap not negative beyond noise' — a slightly negative gap (within the 3-image floor)
    passes, a gap negative beyond noise does not; the SSR-AB and gain conditions still apply."""
    assert "a gap not negative beyond noise" in lf.RULES["C7"]
    gain = lf.Stat([0.06, 0.07, 0.08], BASE)
    assert gain.positive
    slightly_negative = lf.Stat([-0.010, -0.012, -0.008], BASE)
    assert slightly_negative.mean < 0 and not slightly_negative.negative
    assert lf._c7_verdict(gain, slightly_negative, True) == "holds"
    clearly_negative = lf.Stat([-0.05, -0.06, -0.055], BASE)
    assert clearly_negative.negative
    assert lf._c7_verdict(gain, clearly_negative, True) == "within noise"
    assert lf._c7_verdict(gain, slightly_negative, False) == "within noise"  # SSR-AB not higher on every seed
    assert lf._c7_verdict(lf.Stat([-0.06, -0.07, -0.08], BASE), slightly_negative, True) == \
        "contradicted (gap gain -0.070±0.006)"


def raw(lf, **means) -> dict:
    """C2's raw-noise stats: every common noise at mean 0 unless given, 3 seeds with a small spread."""
    return {n: lf.Stat([means.get(n, 0.0) + d for d in (-0.002, 0.0, 0.002)], BASE) for n in lf.COMMON}


def test_c2_counts_the_papers_bn_exception_only_where_the_paper_makes_it(lf):
    assert lf._c2_verdict(raw(lf), has_bn=True) == "holds"
    assert lf._c2_verdict(raw(lf, gauss1=0.03), has_bn=True) == \
        "holds (the paper's BN exception: G(1,1) +0.030±0.001 positive)"
    assert lf._c2_verdict(raw(lf, gauss1=0.03), has_bn=False) == "contradicted (G(1,1) +0.030±0.001 asymmetric)"
    assert lf._c2_verdict(raw(lf, gauss1=-0.03), has_bn=True) == "contradicted (G(1,1) -0.030±0.001 asymmetric)"
    assert lf._c2_verdict(raw(lf, uniform=0.03, ones=-0.04), has_bn=True) == \
        "contradicted (U(-1,1) +0.030±0.001, {1} -0.040±0.001 asymmetric)"  # zero-mean; a negative {1}


def test_c2_does_not_count_a_noise_at_chance_on_both_sides(lf):
    """A valley whose every λ ≠ 0 is at chance (10 classes: error ≥ 0.85) is saturated; one side below is not,
    and a network at chance already at λ = 0 has no valley to saturate."""
    def run(ones, binary):
        curve = lambda err: {"scales": {"1": {"error": err}}}  # noqa: E731
        return {"fig3_record": {"lambdas": [-1.0, -0.5, 0.0, 0.5, 1.0],
                                "curves": {"ones": curve(ones), "binary": curve(binary)}}}

    runs = [run([0.9, 0.88, 0.1, 0.9, 0.86], [0.9, 0.9, 0.1, 0.5, 0.9]) for _ in range(2)]
    assert lf.saturated_noises(runs, 10) == ["ones"]
    assert lf.saturated_noises(runs + [run([0.9, 0.9, 0.1, 0.6, 0.9], [0.9] * 5)], 10) == []  # one seed open
    assert lf.saturated_noises([run([0.9, 0.9, 0.88, 0.9, 0.9], [0.9] * 5)], 10) == []  # chance at λ = 0 too
    assert lf._c2_verdict(raw(lf, ones=-0.03), has_bn=True, saturated=("ones",)) == \
        "holds ({1} at chance on both sides at s = 1, not counted)"
    assert lf._c2_verdict(raw(lf, ones=-0.03, binary=-0.04), has_bn=True, saturated=("ones",)) == \
        "contradicted ({0,1} -0.040±0.001 asymmetric; {1} at chance on both sides at s = 1, not counted)"


def test_c3_tests_every_step_of_the_r_grid_and_names_the_falls(lf):
    ratios = [0.0, 0.25, 0.5, 1.0]
    rising = [[0.0, 0.03, 0.06, 0.09]] * 3
    assert lf._c3_verdict([[a + d for a in row] for row, d in zip(rising, (-0.002, 0, 0.002))], BASE, ratios) == \
        "holds"
    dip = [[0.0, 0.08, 0.02, 0.10], [0.0, 0.081, 0.021, 0.101], [0.0, 0.079, 0.019, 0.099]]  # up, down, up
    assert lf._c3_verdict(dip, BASE, ratios) == "contradicted (falls: r 0.25→0.5 -0.060±0.000)"
    falling = [[0.1, 0.09, 0.0, -0.05]] * 3  # its first step, -0.01, is within 3/128
    assert lf._c3_verdict(falling, BASE, ratios) == \
        "contradicted (falls: r 0→1 -0.150±0.000, r 0.25→0.5 -0.090±0.000, r 0.5→1 -0.050±0.000)"
    flat = [[0.0, 0.005, 0.01, 0.015]] * 3
    assert lf._c3_verdict([[a + d for a in row] for row, d in zip(flat, (-0.002, 0, 0.002))], BASE, ratios) == \
        "within noise (rise +0.015±0.000)"  # each seed shifted as a whole: the rise is the same


def test_verdict_details_say_by_how_much_a_network_differs(lf):
    """C1, C4, C7 name the offending quantities with their values (the Reading's "by how much")."""
    def run(sc, f5, gain):  # one seed's numbers: two identical draws per noise, raw noises symmetric
        return {"fig3": {**{f"sc-{n}": [sc] * 2 for n in lf.COMMON}, **{n: [0.0] * 2 for n in lf.COMMON}},
                "fig4": {"ratios": [0.0, 1.0], "error_asymmetry": [0.0, 0.2]},
                "fig5": {"init": 0.1, "final": 0.1, "sign": 0.1, "sign-mu": 0.1, "sgp": f5, "sgp-mu": 0.0},
                "fig11": {"random_init": {"ssr_ab": 0.9, "gap": -0.05},
                          "pretrained": {"ssr_ab": 0.95, "gap": -0.05 + gain}}}

    runs = [run(-0.05 + d, -0.04 + d, -0.03 + d) for d in (-0.001, 0.0, 0.001)]
    verdicts = {c: v for c, _, _, v in lf.net_rows("x (CIFAR-10; 3 seeds)", runs, BASE, has_bn=False)}
    assert verdicts["C1"].startswith("contradicted (sc G(0,1) -0.050±0.001, sc U(-1,1) -0.050±0.001")
    assert verdicts["C4"] == "contradicted (sgp(θf) -0.040±0.001)"
    assert verdicts["C7"] == "contradicted (gap gain -0.030±0.001)"


def test_summaries_are_produced_from_the_verdict_rows(lf):
    rows = [("C1", "resnet20 (CIFAR-10; 3 seeds × 3 draws)", "sc asym …", "within noise (5/7 beyond noise)"),
            ("C1", "vgg8_bn (CIFAR-10; 3 seeds × 3 draws)", "sc asym …", "holds"),
            ("C5", "resnet20 (CIFAR-10; 3 seeds × 3 draws)", "noise on BN: …", "contradicted"),
            ("C5", "resnet20 (CIFAR-10; 3 seeds × 3 draws)", "1 of 3 seeds, noise on ALL: …", "holds")]
    lines = lf.claim_summaries(rows)
    assert lines[0].endswith("holds on vgg8_bn (CIFAR-10); within noise on resnet20 (CIFAR-10) (5/7 beyond noise).")
    assert lines[1].endswith("holds on resnet20 (CIFAR-10), noise on ALL; contradicted on resnet20 (CIFAR-10), "
                             "noise on BN.")  # the noise group named after a seed subset too
    flipped = lf.claim_summaries([(c, n, m, "contradicted") for c, n, m, _ in rows])
    assert "holds" not in flipped[0].split("): ", 1)[1]


def test_committed_claims_files_are_what_the_code_writes(lf):
    """CLAIMS.md and claims_table.md equal `landscape_figures.py --claims` on the committed numbers."""
    numbers = lf.read_numbers(LANDSCAPE)
    assert numbers["cnn"] and len(numbers["bn_seeds"]) == 3 and numbers["fl_records"]
    assert (LANDSCAPE / "claims_table.md").read_text() == lf.claims_table(lf.table_rows(numbers))
    assert (LANDSCAPE / "CLAIMS.md").read_text() == lf.claims_document(**numbers), \
        "CLAIMS.md is generated: run `python benchmarks/landscape_figures.py --claims`"


def test_fig3_noise_asymmetries_pool_seeds_and_draws_and_a_fixed_direction_counts_once_per_seed(lf):
    """NOISE_RULES: Fig. 3's SE is over seeds × draws; {1} (the same in every draw) gives one value per seed."""
    assert lf.fig3_values([[0.1, 0.3], [0.2, 0.4]]) == [0.1, 0.3, 0.2, 0.4]
    assert lf.fig3_values([[-0.017] * 5, [-0.02] * 5]) == [-0.017, -0.02]
    one_seed = lf.Stat(lf.fig3_values([[0.04, 0.05, 0.06, -0.09, -0.02]]), 3 / 2000)
    assert one_seed.se > 0.02 and not (one_seed.positive or one_seed.negative)  # draws spread: within noise
    assert "over seeds × noise draws for Fig. 3" in " ".join(lf.NOISE_RULES)
