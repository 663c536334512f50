"""The DeepSpeed config rayft writes from an experiment, and how a user JSON merges into it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayft.config import ConfigError, ExperimentConfig, config_from_dict, load_config
from rayft.training.deepspeed_config import DEEPSPEED_CONFIG_FILE, build_deepspeed_config, with_precision, write_deepspeed_config
from tests.conftest import REPO, tiny_experiment


def _config(tmp_path: Path, *overrides: str, user: dict | None = None) -> ExperimentConfig:
    extra = []
    if user is not None:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(user))
        extra = [f"train.deepspeed.config={path}"]
    raw = tiny_experiment(tmp_path, train={"batch_size": 4, "grad_accum": 3, "max_grad_norm": 0.5}, scaling={"num_workers": 2})
    return config_from_dict(raw, ["train.backend=deepspeed", *overrides, *extra])


def test_every_setting_the_experiment_states_is_written(tmp_path: Path) -> None:
    ds = build_deepspeed_config(_config(tmp_path, "train.deepspeed.stage=3", "train.deepspeed.offload_params=true", "train.precision=bf16"))
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 4 * 3 * 2
    assert ds["gradient_clipping"] == 0.5
    assert ds["managed_gradient_accumulation"] is False
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "none"}, "offload_param": {"device": "cpu"}}
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert "optimizer" not in ds and "scheduler" not in ds, "rayft passes its own AdamW and schedule"


def test_fp16_gets_dynamic_loss_scaling_and_offload_keeps_torch_adamw(tmp_path: Path) -> None:
    ds = build_deepspeed_config(_config(tmp_path, "train.precision=fp16", "train.deepspeed.offload_optimizer=true"))
    assert ds["fp16"]["enabled"] is True and ds["fp16"]["loss_scale"] == 0  # 0: dynamic
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert ds["zero_force_ds_cpu_optimizer"] is False


def test_no_clipping_is_written_as_zero(tmp_path: Path) -> None:
    assert build_deepspeed_config(_config(tmp_path, "train.max_grad_norm=null"))["gradient_clipping"] == 0.0


def test_a_user_json_adds_keys_and_may_repeat_equal_ones(tmp_path: Path) -> None:
    user = {
        "gradient_accumulation_steps": 3,
        "zero_optimization": {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 1000},
        "steps_per_print": 5,
        "communication_data_type": "fp32",
    }
    ds = build_deepspeed_config(_config(tmp_path, user=user))
    assert ds["zero_optimization"]["overlap_comm"] is True and ds["zero_optimization"]["reduce_bucket_size"] == 1000
    assert ds["steps_per_print"] == 5, "rayft's defaults give way to the user's"
    assert ds["communication_data_type"] == "fp32" and ds["gradient_accumulation_steps"] == 3


@pytest.mark.parametrize(
    ("user", "json_key", "experiment_key"),
    [
        ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8", "train.batch_size"),
        ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps=1", "train.grad_accum"),
        ({"train_batch_size": 64}, "train_batch_size=64", "train.batch_size x train.grad_accum x scaling.num_workers"),
        ({"gradient_clipping": 1.0}, "gradient_clipping=1.0", "train.max_grad_norm"),
        ({"zero_optimization": {"stage": 3}}, "zero_optimization.stage=3", "train.deepspeed.stage"),
        ({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "zero_optimization.offload_optimizer.device='cpu'", "train.deepspeed.offload_optimizer"),
        ({"bf16": {"enabled": True}}, "bf16.enabled=True", "train.precision"),
    ],
)
def test_a_user_key_that_contradicts_the_experiment_names_both(tmp_path: Path, user: dict, json_key: str, experiment_key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_deepspeed_config(_config(tmp_path, user=user))
    message = str(caught.value)
    assert message.startswith("train.deepspeed.config: ") and json_key in message and experiment_key in message


@pytest.mark.parametrize("key", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_stay_rayfts(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"train.deepspeed.config: '{key}' in .*ds.json is not allowed"):
        build_deepspeed_config(_config(tmp_path, user={key: {"type": "Adam"}}))


def test_a_value_where_a_section_belongs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zero_optimization in .* must be a section"):
        build_deepspeed_config(_config(tmp_path, user={"zero_optimization": 2}))


def test_a_missing_or_broken_json_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.deepspeed.config: '.*nope.json' not found"):
        build_deepspeed_config(_config(tmp_path, f"train.deepspeed.config={tmp_path / 'nope.json'}"))
    (tmp_path / "bad.json").write_text("{stage: 2")
    with pytest.raises(ConfigError, match="train.deepspeed.config: .*bad.json is not valid JSON"):
        build_deepspeed_config(_config(tmp_path, f"train.deepspeed.config={tmp_path / 'bad.json'}"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        build_deepspeed_config(_config(tmp_path, f"train.deepspeed.config={tmp_path / 'list.json'}"))


def test_precision_fallback_rewrites_only_the_precision(tmp_path: Path) -> None:
    ds = build_deepspeed_config(_config(tmp_path, "train.precision=fp16"))
    fallen = with_precision(ds, "fp32")
    assert fallen["fp16"]["enabled"] is False and fallen["bf16"]["enabled"] is False
    assert ds["fp16"]["enabled"] is True, "the original is left alone"
    assert {k: v for k, v in fallen.items() if k not in {"fp16", "bf16"}} == {k: v for k, v in ds.items() if k not in {"fp16", "bf16"}}


def test_the_config_is_saved_in_the_run_directory(tmp_path: Path) -> None:
    ds = build_deepspeed_config(_config(tmp_path))
    assert json.loads(write_deepspeed_config(ds, tmp_path).read_text()) == ds
    assert (tmp_path / DEEPSPEED_CONFIG_FILE).is_file()


def test_deepspeed_settings_need_the_deepspeed_backend(tmp_path: Path) -> None:
    raw = tiny_experiment(tmp_path)
    assert config_from_dict(raw).train.deepspeed is None
    assert config_from_dict(raw, ["train.backend=deepspeed"]).train.deepspeed.stage == 2
    with pytest.raises(ConfigError, match=r"^train\.deepspeed: only used with train.backend=deepspeed"):
        config_from_dict(raw, ["train.deepspeed.stage=3"])
    with pytest.raises(ConfigError, match=r"^train\.deepspeed\.stage: Input should be 0, 1, 2 or 3"):
        config_from_dict(raw, ["train.backend=deepspeed", "train.deepspeed.stage=4"])
    with pytest.raises(ConfigError, match=r"^train\.deepspeed\.offload_params: needs ZeRO stage 3"):
        config_from_dict(raw, ["train.backend=deepspeed", "train.deepspeed.offload_params=true"])
    with pytest.raises(ConfigError, match=r"^train\.deepspeed\.offload_optimizer: needs ZeRO stage 1, 2 or 3"):
        config_from_dict(raw, ["train.backend=deepspeed", "train.deepspeed.stage=0", "train.deepspeed.offload_optimizer=true"])
    resolved = config_from_dict(raw, ["train.backend=deepspeed"])
    assert config_from_dict(resolved.model_dump(mode="json")) == resolved, "the resolved config round-trips (workers re-validate it)"


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "experiments").glob("*.yaml") if "backend: deepspeed" in p.read_text()), ids=lambda p: p.name)
def test_shipped_deepspeed_experiments_build_their_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # their JSON paths are relative to the repository, where their command runs
    ds = build_deepspeed_config(load_config(path))
    assert ds["zero_optimization"]["stage"] == load_config(path).train.deepspeed.stage


def test_buckets_are_sized_to_the_model_unless_the_user_sizes_them(tmp_path: Path) -> None:
    """As the transformers Trainer fills "auto": DeepSpeed's 5e8-element defaults suit billion-parameter models."""
    zero3 = build_deepspeed_config(_config(tmp_path, "train.deepspeed.stage=3"), hidden_size=64)["zero_optimization"]
    assert (zero3["reduce_bucket_size"], zero3["stage3_prefetch_bucket_size"], zero3["stage3_param_persistence_threshold"]) == (4096, 3686, 640)
    zero2 = build_deepspeed_config(_config(tmp_path), hidden_size=64)["zero_optimization"]
    assert zero2["reduce_bucket_size"] == 4096 and "stage3_prefetch_bucket_size" not in zero2
    assert "reduce_bucket_size" not in build_deepspeed_config(_config(tmp_path, "train.deepspeed.stage=0"), hidden_size=64)["zero_optimization"]
    user = {"zero_optimization": {"reduce_bucket_size": 500}}
    assert build_deepspeed_config(_config(tmp_path, user=user), hidden_size=64)["zero_optimization"]["reduce_bucket_size"] == 500
