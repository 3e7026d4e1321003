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
    assert lf._c7_verdict(lf.Stat([-0.06, -0.07, -0.08], BASE), slightly_negative, True) == "contradicted"


def raw(lf, **means) -> dict:
    """C2's raw-noise stats: every common noise at mean 0 unless given, 3 seeds with a small spread."""
    return {n: lf.Stat([means.get(n, 0.0) + d for d in (-0.002, 0.0, 0.002)], BASE) for n in lf.COMMON}


def test_c2_counts_the_papers_bn_exception_only_where_the_paper_makes_it(lf):
    assert lf._c2_verdict(raw(lf), has_bn=True) == "holds"
    assert lf._c2_verdict(raw(lf, gauss1=0.03), has_bn=True) == "holds (the paper's BN exception: gauss1 positive)"
    assert lf._c2_verdict(raw(lf, gauss1=0.03), has_bn=False) == "contradicted (gauss1 asymmetric)"
    assert lf._c2_verdict(raw(lf, gauss1=-0.03), has_bn=True) == "contradicted (gauss1 asymmetric)"
    assert lf._c2_verdict(raw(lf, uniform=0.03), has_bn=True) == "contradicted (uniform asymmetric)"  # zero-mean


def test_c3_tests_every_step_of_the_r_grid(lf):
    rising = [[0.0, 0.03, 0.06, 0.09]] * 3
    assert lf._c3_verdict([[a + d for a in row] for row, d in zip(rising, (-0.002, 0, 0.002))], BASE) == "holds"
    dip = [[0.0, 0.08, 0.02, 0.10], [0.0, 0.081, 0.021, 0.101], [0.0, 0.079, 0.019, 0.099]]  # up, down, up
    assert lf._c3_verdict(dip, BASE) == "contradicted"
    flat = [[0.0, 0.005, 0.01, 0.015]] * 3
    assert lf._c3_verdict([[a + d for a in row] for row, d in zip(flat, (-0.002, 0, 0.002))], BASE) == \
        "within noise"


def test_summaries_are_produced_from_the_verdict_rows(lf):
    rows = [("C1", "resnet20 (CIFAR-10; 3 seeds × 3 draws)", "sc asym …", "within noise (5/7 beyond noise)"),
            ("C1", "vgg8_bn (CIFAR-10; 3 seeds × 3 draws)", "sc asym …", "holds"),
            ("C5", "resnet20 (CIFAR-10; 3 seeds × 3 draws)", "noise on BN: …", "contradicted")]
    lines = lf.claim_summaries(rows)
    assert lines[0].endswith("holds on vgg8_bn (CIFAR-10); within noise on resnet20 (CIFAR-10) (5/7 beyond noise).")
    assert lines[1].endswith("contradicted on resnet20 (CIFAR-10), noise on BN.")
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
