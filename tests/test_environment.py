"""environment.json: versions, device, threads, CPU kernel level, and the CUDA / cuDNN / GPU a result was computed with."""

import json

import torch

from fedsign.results import RunResults


def test_environment_records_cuda_cudnn_and_the_gpu(tmp_path, monkeypatch):
    results = RunResults(tmp_path)
    results.write_environment(torch.device("cpu"))
    cpu = json.loads((tmp_path / "environment.json").read_text())
    assert cpu["cuda"] == torch.version.cuda and cpu["cudnn"] == torch.backends.cudnn.version()
    assert cpu["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and cpu["cpu"]
    assert "gpu" not in cpu

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    results.write_environment(torch.device("cuda", 0))
    assert json.loads((tmp_path / "environment.json").read_text())["gpu"] == "NVIDIA H200"
