"""The trained-network landscape suite (benchmarks/landscape/trained_suite.py) on sklearn digits: the evaluation
options take effect, trained weights are cached and the suite resumes without training again (a training or an
analysis stopped part-way from its last epoch or part), the time budget stops it, and CLAIMS.md puts its
verdicts before the reduced-scale ones (CPU, seconds)."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedsign.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

trained_suite = importlib.import_module("benchmarks.landscape.trained_suite")
claims = importlib.import_module("benchmarks.landscape.claims")

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = trained_suite.TrainedScale(
    groups=(trained_suite.Group("digits", ("cnn", "resnet20"), (0,), 1),),
    test_samples=60, recal_samples=40, noise_seeds=2, points=3, interp_points=4, ratios=(0.0, 1.0),
    small_batch=128, soup_epochs=(1, 2), soup_lr=0.01, fig7_nets=("resnet20",))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    done = trained_suite.run_suite(TINY, root / "landscape" / "trained", root / "cache", log=lambda _: None)
    return root, done


def test_first_run_trains_caches_and_analyses_at_the_requested_scale(first_run):
    root, done = first_run
    assert done["stopped"] is None
    assert sorted(done["trained"]) == sorted(f"digits/{n}" for n in (
        "cnn-seed0", "cnn-seed0-bs128", "resnet20-seed0", "resnet20-seed0-bs128", "resnet20-seed0-bnuniform",
        "resnet20-seed0-bngaussian"))
    assert done["analysed"] == ["digits/cnn-seed0", "digits/resnet20-seed0"]
    assert len(list((root / "cache" / "digits").glob("*.safetensors"))) == 6
    networks = json.loads((root / "landscape" / "trained" / "networks.json").read_text())
    assert networks["digits/resnet20-seed0"]["settings"]["lr_schedule"] == "cosine"
    assert all(m["channels_last"] for m in networks.values())  # trained (and evaluated) in channels_last
    assert all(0.0 <= m["test_accuracy"] <= 1.0 and m["train_seconds"] > 0 for m in networks.values())
    assert {m["cpu_capability"] for m in networks.values()} == {torch.backends.cpu.get_cpu_capability()}
    numbers = json.loads((root / "landscape" / "trained" / "digits-seed0" / "numbers.json").read_text())
    assert numbers["data"]["test"] == "60 seeded test images"  # test_samples
    assert numbers["data"]["recal"] == "40 seeded training images"  # recal_samples
    for net in ("cnn", "resnet20"):
        res = numbers["nets"][net]
        assert all(len(draws) == 2 for draws in res["fig3"].values())  # noise_seeds: draws per model
        assert len(res["fig3_record"]["lambdas"]) == 3 and len(res["fig5_record"]["lambdas"]) == 3  # points
        assert len(res["fig8"]["lambdas"]) == 4  # interp_points
        assert res["fig4"]["ratios"] == [0.0, 1.0]
        assert set(res["fig11"]) == {"random_init", "pretrained"}
        for arm in res["fig11"].values():  # soup_epochs: both arms' checkpoints; the top level is the last one
            assert [c["epoch"] for c in arm["checkpoints"]] == [1, 2]
            assert {k: v for k, v in arm.items() if k != "checkpoints"} == arm["checkpoints"][-1]
        assert res["network"] == networks[f"digits/{net}-seed0"]
    assert set(numbers["nets"]["resnet20"]["fig7"]) == {"ones", "uniform", "gaussian"}
    assert "fig7" not in numbers["nets"]["cnn"]  # no BN
    pngs = {p.name for p in (root / "landscape" / "trained" / "digits-seed0").glob("*.png")}
    assert {"fig3_cnn.png", "fig4_cnn.png", "fig5_cnn.png", "fig8_cnn.png", "fig7_resnet20.png"} <= pngs


def test_second_run_trains_and_analyses_nothing_and_a_lost_analysis_reuses_the_cache(first_run):
    root, _ = first_run
    again = trained_suite.run_suite(TINY, root / "landscape" / "trained", root / "cache", log=lambda _: None)
    assert again == {"trained": [], "analysed": [], "stopped": None}
    numbers_path = root / "landscape" / "trained" / "digits-seed0" / "numbers.json"
    before = json.loads(numbers_path.read_text())
    lost = {**before, "nets": {"resnet20": before["nets"]["resnet20"]}}  # as if stopped before cnn's analysis
    numbers_path.write_text(json.dumps(lost))
    redo = trained_suite.run_suite(TINY, root / "landscape" / "trained", root / "cache", log=lambda _: None)
    assert redo == {"trained": [], "analysed": ["digits/cnn-seed0"], "stopped": None}
    after = json.loads(numbers_path.read_text())
    assert after["nets"]["cnn"]["fig3"] == before["nets"]["cnn"]["fig3"]  # the same cached weights
    assert after["nets"]["resnet20"] == before["nets"]["resnet20"]  # kept, not recomputed


def test_time_budget_stops_before_any_training_and_other_scales_or_settings_are_refused(first_run, tmp_path):
    root, _ = first_run
    done = trained_suite.run_suite(TINY, tmp_path / "out", tmp_path / "cache", time_budget=0.0, log=lambda _: None)
    assert done["trained"] == [] and done["stopped"].startswith("time budget of 0 s spent before training")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(trained_suite.SuiteError, match="holds numbers of another scale; pass another --out"):
        trained_suite.run_suite(replace(TINY, points=5), root / "landscape" / "trained", root / "cache",
                                log=lambda _: None)
    longer = replace(TINY, groups=(replace(TINY.groups[0], epochs=2),))
    with pytest.raises(trained_suite.SuiteError, match="was trained with other settings.*pass another --cache-dir"):
        trained_suite.run_suite(longer, tmp_path / "out", root / "cache", log=lambda _: None)
    with pytest.raises(trained_suite.SuiteError, match="init pytorch.*pass another --cache-dir"):
        trained_suite.run_suite(replace(TINY, init="fedrepo"), tmp_path / "out", root / "cache", log=lambda _: None)
    with pytest.raises(trained_suite.SuiteError, match="channels_last True.*pass another --cache-dir"):
        trained_suite.run_suite(replace(TINY, channels_last=False), tmp_path / "out", root / "cache",
                                log=lambda _: None)
    cache = trained_suite.Cache(root / "cache", TINY)
    loaded, _ = cache.load(trained_suite.Job("digits", "resnet20", 0, replace(TINY.sgd, epochs=1)), DATASETS["digits"])
    conv = loaded.model.get_parameter("layer1.0.conv1.weight")
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_claims_put_the_trained_verdicts_first(first_run):
    root, _ = first_run
    claims.write_claims(root / "landscape")
    written = (root / "landscape" / "CLAIMS.md").read_text()
    assert "## Verdicts on trained networks" in written
    assert "| C1: " in (root / "landscape" / "claims_table.md").read_text()
    assert (root / "landscape" / "trained" / "digits-seed0" / "fig11_soups.png").is_file()
    trained = [json.loads((root / "landscape" / "trained" / "digits-seed0" / "numbers.json").read_text())]
    rows = claims.trained_rows(trained)
    assert {c for c, *_ in rows} == {"C1", "C2", "C3", "C4", "C5", "C6", "C7"}
    assert all("(digits, trained, test acc" in net for _, net, *_ in rows)
    numbers = {**claims.read_numbers(ROOT / "benchmarks" / "results" / "landscape"), "trained": []}
    without = claims.claims_document(**numbers)
    assert "**Trained networks**: no numbers yet." in without and "## Verdicts on trained networks" not in without
    document = claims.claims_document(**{**numbers, "trained": trained})
    assert "**Trained suite**" in document and "60 seeded test images" in document
    first, reduced = document.index("## Verdicts on trained networks"), document.index("## Verdicts at reduced scale")
    assert first < reduced and "near chance" in document[reduced:]
    assert document.index("resnet20 (digits, trained") < reduced < document.index("resnet20 (CIFAR-10; 3 seeds")
    assert "not complete" not in document  # every network of TINY is analysed
    partial = {**trained[0], "nets": {"resnet20": trained[0]["nets"]["resnet20"]}}
    two_seeds = {**partial, "scale": {**partial["scale"], "groups": [{**partial["scale"]["groups"][0], "seeds": [0, 1]}]}}
    assert ("**The trained suite is not complete**: 1 of 4 networks analysed; still to come: digits cnn seed 0, "
            "digits cnn seed 1, digits resnet20 seed 1.") in claims.claims_document(**{**numbers, "trained": [two_seeds]})


def test_fig11_halves_share_their_start_and_train_at_the_given_settings():
    common = importlib.import_module("benchmarks.landscape.common")
    from fedsign.data import load_dataset
    from fedsign.landscape.soups import split_halves
    from fedsign.training import TrainSettings

    digits = load_dataset("digits")
    x, y = digits.train_x[:256], digits.train_y[:256].long()
    halves = split_halves(len(x), 0)
    still = TrainSettings(epochs=1, batch_size=64, lr=0.0, momentum=0.0)
    model, theta_i, a, b = common.train_halves("cnn", DATASETS["digits"], x, y, halves, still, [1, 2], 0)
    assert sorted(a) == sorted(b) == [1, 2]
    fresh = common.build_net("cnn", DATASETS["digits"], 0)
    assert all(torch.equal(theta_i[k], v) for k, v in fresh.state_dict().items())  # the seeded init
    assert all(torch.equal(s[k], theta_i[k]) for s in (*a.values(), *b.values()) for k in theta_i)  # lr 0: no move
    start = {k: v + 1.0 for k, v in theta_i.items()}
    moving = replace(still, lr=0.05)
    _, from_start, a, b = common.train_halves("cnn", DATASETS["digits"], x, y, halves, moving, [1], 0, start=start)
    assert all(torch.equal(from_start[k], start[k]) for k in start)
    assert any(not torch.equal(a[1][k], b[1][k]) for k in a[1])  # other data, another model


def test_cli_options_set_the_trained_scale():
    cli = importlib.import_module("benchmarks.landscape_figures")
    args = cli.parse_args(["--suite", "trained", "--test-samples", "3000", "--recal-samples", "1500", "--draws", "7",
                           "--points", "11", "--nets", "vgg8,resnet20"])
    scale = cli.trained_scale(args)
    assert (scale.test_samples, scale.recal_samples, scale.noise_seeds, scale.points) == (3000, 1500, 7, 11)
    assert scale.groups == trained_suite.TRAINED.groups  # --nets selects what a call runs, not the scale
    default = trained_suite.TRAINED
    assert default.test_samples >= 2000 and default.recal_samples >= 1000 and default.noise_seeds >= 5
    assert default.points >= 9 and all(len(g.seeds) >= 2 for g in default.groups if g.dataset == "fmnist")
    for bad in (["--draws", "0"], ["--data-dir", "/somewhere"], ["--nets", "vgg11"]):
        with pytest.raises(SystemExit):
            cli.parse_args(["--suite", "trained", *bad])


def test_the_scale_check_builds_every_network_on_its_groups_images_before_any_work():
    trained_suite.check_scale(trained_suite.TRAINED)  # Fashion-MNIST padded to 32x32: vgg8 fits
    unpadded = replace(trained_suite.TRAINED, groups=(trained_suite.Group("fmnist", ("resnet20", "vgg8"), (0,), 1),))
    with pytest.raises(trained_suite.SuiteError, match=r"vgg8 on fmnist at 28x28: .*image_size"):
        trained_suite.check_scale(unpadded)


def test_networks_json_keeps_the_networks_an_earlier_cache_recorded(first_run, tmp_path):
    earlier = {"digits/cnn-seed9": {"test_accuracy": 0.5, "train_seconds": 1.0}}  # trained on a lost cache
    (tmp_path / "networks.json").write_text(json.dumps(earlier))
    trained_suite.write_networks(tmp_path, trained_suite.Cache(first_run[0] / "cache", TINY))
    networks = json.loads((tmp_path / "networks.json").read_text())
    assert networks["digits/cnn-seed9"] == earlier["digits/cnn-seed9"]
    assert list(networks) == sorted(networks) and "digits/resnet20-seed0" in networks and len(networks) == 7


def test_a_selection_runs_only_its_networks_and_folders_and_the_rest_resumes_into_the_same_suite(first_run, tmp_path):
    two_seeds = replace(TINY, groups=(replace(TINY.groups[0], seeds=(0, 1), extra_seeds=0),))
    out, cache = tmp_path / "out", tmp_path / "cache"
    shutil.copytree(first_run[0] / "cache", cache)  # seed 0's networks: trained alike, loaded not trained
    done = trained_suite.run_suite(two_seeds, out, cache, nets=["cnn"], runs=["digits-seed1"], log=lambda _: None)
    assert done["trained"] == ["digits/cnn-seed1"] and done["analysed"] == ["digits/cnn-seed1"]
    assert not (out / "digits-seed0").exists()
    rest = trained_suite.run_suite(two_seeds, out, cache, log=lambda _: None)  # the same scale: no refusal
    assert sorted(rest["analysed"]) == ["digits/cnn-seed0", "digits/resnet20-seed0", "digits/resnet20-seed1"]
    assert rest["trained"] == ["digits/resnet20-seed1"]  # seed 0's from the copied cache
    with pytest.raises(trained_suite.SuiteError, match="'digits-seed7' is not in the suite; runs: digits-seed0"):
        trained_suite.run_suite(two_seeds, out, cache, runs=["digits-seed7"], log=lambda _: None)


def test_an_analysis_stopped_part_way_resumes_from_its_finished_parts_with_the_same_numbers(first_run, tmp_path,
                                                                                            monkeypatch):
    root, _ = first_run
    bn_suite = importlib.import_module("benchmarks.landscape.bn_suite")
    out = tmp_path / "out"

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    with monkeypatch.context() as patch:  # the run stops in Fig. 11, after Figs. 3, 4, 5 and 8
        patch.setattr(bn_suite, "soup_record", stop)
        with pytest.raises(Stop):
            trained_suite.run_suite(TINY, out, root / "cache", nets=["cnn"], log=lambda _: None)
    steps_path = out / "digits-seed0" / "steps_cnn.json"
    assert list(json.loads(steps_path.read_text())["steps"]) == ["fig3_draw0", "fig3_draw1", "fig4", "fig5", "fig8"]
    with pytest.raises(trained_suite.SuiteError, match="steps_cnn.json holds numbers of another scale"):
        trained_suite.run_suite(replace(TINY, noise_seeds=3), out, root / "cache", nets=["cnn"], log=lambda _: None)
    curves, logged = [], []
    monkeypatch.setattr(bn_suite, "valley_curves", lambda *a, **k: curves.append(1))  # must not run again
    done = trained_suite.run_suite(TINY, out, root / "cache", nets=["cnn"], log=logged.append)
    assert done["analysed"] == ["digits/cnn-seed0"] and curves == []
    assert logged[0] == "resuming the analysis of digits/cnn-seed0 after fig3_draw0, fig3_draw1, fig4, fig5, fig8"
    assert not steps_path.exists()  # numbers.json holds the network now
    numbers = json.loads((out / "digits-seed0" / "numbers.json").read_text())
    parts = numbers["step_seconds"]["cnn"]  # the first call's parts are timed too, and counted in the analysis
    assert list(parts) == ["fig3_draw0", "fig3_draw1", "fig4", "fig5", "fig8", "fig11_random_init", "fig11_pretrained"]
    assert numbers["seconds"]["cnn"] > sum(parts.values()) > sum(parts[k] for k in list(parts)[:5]) > 0
    resumed = numbers["nets"]["cnn"]
    whole = json.loads((root / "landscape" / "trained" / "digits-seed0" / "numbers.json").read_text())["nets"]["cnn"]
    assert untimed(resumed) == untimed(whole)  # the parts read back are what an uninterrupted analysis writes


def test_a_training_stopped_part_way_resumes_from_its_last_epoch_with_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from fedsign.data import load_dataset

    scale = replace(TINY, groups=(trained_suite.Group("digits", ("cnn",), (0,), 3),))
    dataset = load_dataset("digits").padded(scale.groups[0].spec.image_size)  # as run_suite loads it
    job = trained_suite.jobs_for(scale.groups[0], "cnn", 0, scale)["main"]
    cache = trained_suite.Cache(tmp_path / "cache", scale)

    class Stop(Exception):
        pass

    def stop_after_the_first_epoch(line):
        if "epoch 1/3" in line:
            raise Stop

    with pytest.raises(Stop):
        cache.train(job, dataset, stop_after_the_first_epoch)
    progress = cache.progress_path(job)
    assert not cache.has(job) and cache.progress_info(progress)["numbers"]["epochs_done"] == 1
    other = replace(job, settings=replace(job.settings, lr=0.5))  # the same file name, other settings
    with pytest.raises(trained_suite.SuiteError, match="progress of a training with other settings"):
        cache.check(other)
    logged = []
    meta = cache.train(job, dataset, logged.append)
    assert logged[0] == "resuming the training of digits/cnn-seed0 after epoch 1"
    assert [line.split(":")[1].split("(")[0].strip() for line in logged[1:]] == ["epoch 2/3"]
    assert not progress.exists() and cache.has(job)
    whole = trained_suite.Cache(tmp_path / "whole", scale)
    whole_meta = whole.train(job, dataset, lambda _: None)
    assert meta["test_accuracy"] == whole_meta["test_accuracy"] and meta["train_seconds"] > 0
    weights, expected = load_file(str(cache.paths(job)[0])), load_file(str(whole.paths(job)[0]))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)


def test_a_train_only_process_trains_what_no_other_process_holds_then_waits_for_the_rest(first_run, tmp_path):
    out, cache_dir = tmp_path / "out", tmp_path / "cache"
    held = trained_suite.jobs_for(TINY.groups[0], "cnn", 0, TINY)["main"]
    logged, done = [], {}
    worker = threading.Thread(target=lambda: done.update(trained_suite.run_suite(
        TINY, out, cache_dir, nets=["cnn"], train_only=True, log=logged.append)))
    with trained_suite.Cache(cache_dir, TINY).training_lock(held):  # another process is training cnn-seed0
        worker.start()
        for _ in range(6000):
            if any(line.startswith("waiting") for line in logged) or not worker.is_alive():
                break
            time.sleep(0.05)
        assert logged[-1] == "waiting for another process training digits/cnn-seed0"
        assert "trained digits/cnn-seed0-bs128" in logged[-2]  # the twin no one held, trained meanwhile
        for path in trained_suite.Cache(first_run[0] / "cache", TINY).paths(held):  # ... and writes it
            shutil.copy(path, cache_dir / "digits" / path.name)
    worker.join(300)
    assert done["trained"] == ["digits/cnn-seed0-bs128"] and done["analysed"] == []  # the held one is loaded
    assert not (out / "digits-seed0").exists()
    again = trained_suite.run_suite(TINY, out, cache_dir, nets=["cnn"], log=lambda _: None)
    assert again["trained"] == [] and again["analysed"] == ["digits/cnn-seed0"]


def untimed(record):
    """``record`` without its evaluation timings (wall-clock seconds differ between runs)."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k != "timing"}
    return [untimed(v) for v in record] if isinstance(record, list) else record
