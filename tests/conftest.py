"""Shared fixtures: tiny configs and data that need no download."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayft.training.loopback import free_port, keep_embedded_ray_on_loopback

keep_embedded_ray_on_loopback()  # before anything imports Ray: every test cluster stays on 127.0.0.1
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")



# An S3 API for tests (moto server on loopback, started by the `s3` fixture). The endpoint and the
# fake credentials are set before Ray starts, so Ray workers inherit them as a user's cluster would.
S3_ENDPOINT = f"http://127.0.0.1:{free_port()}"
S3_BUCKET = "rayft-test"
os.environ.update(AWS_ENDPOINT_URL=S3_ENDPOINT, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_DATA = REPO / "experiments" / "data" / "quickstart.jsonl"
ASSETS = Path(__file__).resolve().parent / "assets"


def tiny_experiment(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A small valid experiment dict; keyword sections are merged over the defaults
    (`method` is replaced whole: its keys depend on its type)."""
    config: dict[str, Any] = {
        "name": "t",
        "model": {"tiny": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "max_position": 128}},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": str(QUICKSTART_DATA), "max_length": 96, "split": {"val": 0.05, "test": 0.0, "seed": 0}},
        "train": {"max_steps": 8, "lr": 3e-3, "batch_size": 8, "logging_steps": 2, "eval_steps": 4, "save_steps": 4},
        "eval": {"max_generate_examples": 16, "generate": {"max_new_tokens": 6}},
        "scaling": {"num_workers": 2},
        "run": {"storage_path": str(tmp_path / "runs")},
    }
    for name, values in sections.items():
        if name != "method" and isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


def examples_from_records(tokenizer: Any, data: Any, records: list[dict[str, Any]]) -> list[Any]:
    """Records formatted and tokenized as the pipeline does, as the Examples workers train on."""
    from rayft.data.batching import load_examples
    from rayft.data.formats import format_record
    from rayft.data.tokenize import tokenize_formatted

    rows = []
    for index, record in enumerate(records):
        formatted = format_record(record, data, tokenizer)
        tokens = tokenize_formatted(formatted, tokenizer, data)
        rows.append({
            "order": index, "input_ids": tokens.input_ids, "labels": tokens.labels, "prompt_len": tokens.prompt_len,
            "reference": formatted.reference, "alternatives": json.dumps(list(formatted.alternatives)),
        })
    return load_examples(rows)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def byte_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A real S3 API (moto's server) on 127.0.0.1 with an empty bucket; yields a pyarrow
    filesystem for putting test files there."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(S3_ENDPOINT.rsplit(":", 1)[1]), verbose=False)
    server.start()
    filesystem = pafs.S3FileSystem(endpoint_override=S3_ENDPOINT, allow_bucket_creation=True)
    filesystem.create_dir(S3_BUCKET)
    yield filesystem
    server.stop()


def put_s3(filesystem: Any, key: str, data: bytes) -> str:
    """Upload `data` to the test bucket; returns its s3:// URI."""
    with filesystem.open_output_stream(f"{S3_BUCKET}/{key}") as out:
        out.write(data)
    return f"s3://{S3_BUCKET}/{key}"
