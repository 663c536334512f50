"""`rayft train --address` joins a real multi-node Ray cluster: a head and a worker node on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import ByT5Tokenizer

from rayft.config import TinyModelSpec
from rayft.models.loading import build_tiny_model
from rayft.training.loopback import free_port
from tests.conftest import tiny_experiment

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent



def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="module")
def cluster():
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}"])
    nodes = [head]
    try:
        time.sleep(6)
        nodes.append(_start([f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]))
        time.sleep(6)
        yield address
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(nodes):  # a graceful stop takes ~30 s; the test is done with the nodes
            try:
                node.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
        _forget_cluster(address)


def _forget_cluster(address: str) -> None:
    """`ray start` records its cluster in Ray's address file and a killed node leaves it there;
    Ray processes started later would look the dead cluster up (40 s timeouts each)."""
    from ray._private.utils import get_ray_address_file

    record = Path(get_ray_address_file(None))
    if record.is_file() and record.read_text().strip() == address:
        record.unlink()


def test_train_joins_the_cluster_from_a_local_model_directory(tmp_path: Path, cluster: str) -> None:
    model_dir = tmp_path / "my-model"
    tokenizer = ByT5Tokenizer()
    build_tiny_model(TinyModelSpec(hidden=32, heads=4), tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = tiny_experiment(tmp_path, name="on-cluster", model={"name_or_path": str(model_dir)},
                             train={"max_steps": 20, "eval_steps": 20, "save_steps": 20, "logging_steps": 10})
    config["model"].pop("tiny")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "RAY_AUTH_MODE"}}
    done = subprocess.run([str(BIN / "rayft"), "train", str(tmp_path / "exp.yaml"), "--address", cluster, "train.lr=5e-3"],
                          capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Connecting to existing Ray cluster at address: {cluster}" in done.stderr or "existing Ray cluster" in done.stderr
    result = json.loads((tmp_path / "runs" / "on-cluster" / "result.json").read_text())
    assert result["best_metrics"]["eval_loss"] < result["before"]["eval_loss"]
    assert result["metrics"]["step"] == 20
    saved = yaml.safe_load((tmp_path / "runs" / "on-cluster" / "config.yaml").read_text())
    assert saved["train"]["lr"] == 5e-3 and saved["model"]["name_or_path"] == str(model_dir)


def test_unreachable_address_exits_2(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    done = subprocess.run([str(BIN / "rayft"), "train", str(tmp_path / "exp.yaml"), "--address", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "rayft: error: address: cannot connect to the Ray cluster at" in done.stderr
