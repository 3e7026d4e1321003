"""Run config: defaults mirrored in pyproject, parsing like flwr, one-line errors."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedsign.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_holds_every_key_with_its_default():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig.defaults()


def test_readme_key_table_names_every_platform_key():
    """README's "Run-config keys" table lists every key of PlatformConfig (the hyperparameters have their own,
    generated table, checked in test_registry)."""
    from fedsign.config import PlatformConfig

    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Run-config keys", 1)[1].split("\n\n", 2)[1]
    listed = {name.strip(" `") for line in table.splitlines() for name in line.split("|")[1].split(",")
              if line.startswith("| `")}
    assert listed == set(PlatformConfig.keys())


def test_parses_flwr_syntax_and_types():
    cfg = RunConfig.from_overrides("strategy='fedsign' num-rounds=3 lr=1 resume=false dirichlet-alpha=0.1")
    assert cfg.strategy == "fedsign" and cfg.num_rounds == 3 and cfg.lr == 1.0 and cfg.dirichlet_alpha == 0.1
    assert isinstance(cfg.lr, float)
    assert RunConfig.from_mapping(cfg.to_dict()) == cfg


def test_resolved_paths_are_absolute(tmp_path):
    cfg = RunConfig.from_overrides("out-dir='runs/x'").resolved(tmp_path)
    assert cfg.out_dir == str(tmp_path / "runs" / "x")
    default = RunConfig().resolved(tmp_path)
    assert default.out_dir.startswith(str(tmp_path / "runs" / "fedavg-digits-a0.5-s0-"))


INVALID = [
    ("num-rounds=0", "num-rounds"),
    ("num-clients=-3", "num-clients"),
    ("clients-per-round=11", "clients-per-round"),
    ("dirichlet-alpha=0.0", "dirichlet-alpha"),
    ("dirichlet-alpha=-1.0", "dirichlet-alpha"),
    ("lr=0", "lr"),
    ("lr='fast'", "lr"),
    ("batch-size=1.5", "batch-size"),
    ("strategy='fedfoo'", "strategy"),
    ("dataset='imagenet'", "dataset"),
    ("model='gpt'", "model"),
    ("no-such-key=1", "no-such-key"),
    ("resume=1", "resume"),
    ("momentum=1.0", "momentum"),
    ("partition-style='random'", "partition-style"),
    ("device='tpu'", "device"),
    ("engine='spark'", "engine"),
    ("dataset='mnist' data-dir='/nonexistent/mnist'", "data-dir"),
    ("dataset='cifar10' model='vgg8' data-dir='/nonexistent'", "data-dir"),
    ("dataset='digits' model='vgg8'", "model"),
    ("min-replies=20", "min-replies"),
    ("local-epochs=0", "local-epochs"),
    ("strategy='feddyn' feddyn-alpha=0", "feddyn-alpha"),
    ("fedsign-reduction='max'", "fedsign-reduction"),
]


@pytest.mark.parametrize("overrides,key", INVALID)
def test_invalid_config_rejected_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_overrides(overrides)
    message = str(info.value)
    assert key in message and "\n" not in message


def test_cli_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsign.cli", "run", "--run-config", "num-rounds=0"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: num-rounds must be > 0, got 0"]
    assert not (tmp_path / "runs").exists()


def test_missing_data_dir_says_where_to_get_it():
    with pytest.raises(ConfigError, match="shared/data"):
        RunConfig.from_overrides("dataset='cifar10' model='vgg8' data-dir='/nonexistent'")
