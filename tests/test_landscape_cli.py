"""fedsign landscape CLI: FL runs side by side (`fl`), outside models through --model/--weights, and bad input
(truncated or foreign weights, broken config.json, another dataset's model, a diverged model) as one-line errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fedsign.cli import main

FL = ("dataset='digits' num-clients=4 clients-per-round=2 num-rounds=2 local-epochs=1 batch-size=32 "
      "lr=0.05 seed=1")
FAST = ["--test-samples", "64", "--recal-samples", "64", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(num_classes: int = 10) -> nn.Module:
    """A --model target for digits (1 x 8 x 8 images)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, num_classes))




@pytest.fixture(scope="module")
def fl_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fl")
    runs = []
    for strategy in ("fedavg", "fedsign"):
        out = root / strategy
        assert main(["run", "--quiet", "--run-config", f"strategy='{strategy}' {FL} out-dir='{out}'"]) == 0
        runs.append(out)
    return runs


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_fl_valleys_of_two_runs(fl_runs, tmp_path, capsys):
    out = tmp_path / "fl"
    assert main(["landscape", "fl", *map(str, fl_runs), "--out", str(out), "--points", "3", "--interp-points", "3",
                 *FAST]) == 0
    assert "rebuilt from config.json (seed 1)" in capsys.readouterr().out
    rec = json.loads((out / "fl_valleys.json").read_text())
    assert (out / "fl_valleys.png").stat().st_size > 0 and len(rec["runs"]) == 2
    for run, strategy in zip(rec["runs"], ("fedavg", "fedsign")):
        assert run["label"].startswith(strategy) and run["first_model"].startswith("initial global model rebuilt")
        assert len(run["valleys"]["curves"]) == 14 and set(run["valleys"]["curves"]) >= {"gauss", "sc-ones"}
        assert [r["round"] for r in run["ssr_clients"]] == [1, 2]
        assert all(0.5 < r["ssr_clients"] < 1.0 for r in run["ssr_clients"])
        assert run["interpolation"]["lambdas"] == [-0.5, 0.5, 1.5]
    assert rec["runs"][0]["valleys"]["curves"]["gauss"] != rec["runs"][1]["valleys"]["curves"]["gauss"]


@pytest.mark.parametrize("command", ["bench", "hessian", "curves"])
def test_every_direction_command_takes_the_init_direction(fl_runs, tmp_path, capsys, command):
    """``init`` (θ0) needs the run's initialization: every command gets its directions from one helper."""
    out = tmp_path / command
    option = "--directions" if command == "curves" else "--direction"
    extra = {"bench": ["--points", "2"], "hessian": ["--lambdas", "0,1", "--probes", "1", "--samples", "16"],
             "curves": ["--points", "3", "--scales", "1"]}[command]
    assert main(["landscape", command, str(fl_runs[0]), option, "init", "--out", str(out), *extra, *FAST]) == 0, \
        capsys.readouterr().err
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["config"]["direction" if command != "curves" else "directions"] == "init"
    if command == "bench":
        assert set(record["modes"]) == {"vmap", "loop"} and record["modes"]["vmap"]["max_abs_diff_error"] < 1e-3


def test_fl_needs_metrics(fl_runs, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(fl_runs[0], bare)
    (bare / "metrics.csv").unlink()
    assert main(["landscape", "fl", str(bare), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "no metrics.csv" in error_line(capsys) and not (tmp_path / "o").exists()


def test_bad_run_folders_give_one_line_errors(fl_runs, tmp_path, capsys, write_fmnist):
    run = fl_runs[0]
    cases = {}
    truncated = tmp_path / "truncated"
    shutil.copytree(run, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases[truncated] = "cannot read weights file"
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "config.json").write_text('{"dataset": "digits", ')
    cases[broken] = "not valid JSON"
    foreign = tmp_path / "foreign"
    shutil.copytree(run, foreign)
    state = load_file(str(run / "model.safetensors"))
    save_file({f"module.{k}": v for k, v in state.items()}, str(foreign / "model.safetensors"))
    cases[foreign] = "lack"
    other = tmp_path / "other_dataset"  # a run config for fmnist (28 x 28) holding the digits model
    shutil.copytree(run, other)
    config = json.loads((other / "config.json").read_text())
    write_fmnist(tmp_path / "fmnist", n_train=200)  # written here: no installed Fashion-MNIST needed
    config["dataset"], config["data-dir"] = "fmnist", str(tmp_path / "fmnist")
    (other / "config.json").write_text(json.dumps(config))
    cases[other] = "built as cnn for fmnist"
    diverged = tmp_path / "diverged"
    shutil.copytree(run, diverged)
    state = {k: v.clone() for k, v in state.items()}
    first = next(iter(state))
    state[first].view(-1)[0] = float("nan")
    save_file(state, str(diverged / "model.safetensors"))
    cases[diverged] = "non-finite"
    for path, message in cases.items():
        assert main(["landscape", "curves", str(path), "--points", "3", "--scales", "1", *FAST]) == 2, path
        assert message in error_line(capsys), path


def test_outside_model_with_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = tiny_net()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    save_file({k: v.contiguous() for k, v in tiny_net().state_dict().items() if v.is_floating_point()},
              str(tmp_path / "w2.safetensors"))
    target = ["--model", "test_landscape_cli:tiny_net", "--model-kwargs", "num_classes=10", "--dataset", "digits"]
    assert main(["landscape", "curves", *target, "--weights", str(tmp_path / "w.pt"), "--group", "CLF",
                 "--directions", "gauss,sc-gauss", "--points", "3", "--scales", "1", *FAST]) == 0
    rec = json.loads((tmp_path / "landscape" / "valleys.json").read_text())
    assert rec["parameters"] == ["4.weight", "4.bias"] and set(rec["curves"]) == {"gauss", "sc-gauss"}
    assert main(["landscape", "interpolate", str(tmp_path / "w.pt"), str(tmp_path / "w2.safetensors"), *target,
                 "--points", "3", "--out", str(tmp_path / "i"), *FAST]) == 0
    assert json.loads((tmp_path / "i" / "interpolation.json").read_text())["ssr"]["theta1_theta2"]["all"] < 1
    wrong = ["--model", "test_landscape_cli:tiny_net", "--model-kwargs", "num_classes=3", "--dataset", "digits"]
    assert main(["landscape", "curves", *wrong, "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "outputs 3 classes but digits has 10" in error_line(capsys)
    assert main(["landscape", "curves", "--model", "torchvision.models:resnet18", "--dataset", "digits",
                 "--model-kwargs", "num_classes=10", "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "cannot take digits images" in error_line(capsys)
    assert main(["landscape", "curves", "--model", "nowhere.at_all:f", "--dataset", "digits", *FAST]) == 2
    assert "cannot import" in error_line(capsys)


def test_a_run_loaded_on_a_cpu_has_its_convolutions_in_channels_last(fl_runs):
    from fedsign.cli.landscape.common import load_run

    run = load_run(fl_runs[0], torch.device("cpu"))
    convs = [p for p in run.model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
