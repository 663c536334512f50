from __future__ import annotations

from pathlib import Path

import pytest

from rayft.config import ConfigError, ExperimentConfig, apply_overrides, config_from_dict, load_config
from tests.conftest import REPO, tiny_experiment

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_validates_and_starts_with_its_command(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    first_line = path.read_text().splitlines()[0]
    command = "tune" if config.tune is not None else "train"
    assert first_line == f"# rayft {command} experiments/{path.name}"


def test_overrides_set_nested_keys_and_parse_yaml_scalars(tmp_path: Path) -> None:
    raw = tiny_experiment(tmp_path)
    config = config_from_dict(raw, ["train.lr=1e-4", "method.r=16", "data.split.val=0.2", "method.target_modules=[q_proj]"])
    assert config.train.lr == pytest.approx(1e-4)
    assert config.method.r == 16
    assert config.data.split.val == 0.2
    assert config.method.target_modules == ["q_proj"]
    assert raw["train"]["lr"] == 3e-3, "overrides must not mutate the input"


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^train\.lr: .*valid number.*'abc'"):
        config_from_dict(tiny_experiment(tmp_path), ["train.lr=abc"])


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        config_from_dict(tiny_experiment(tmp_path), ["train.lrr=0.1"])


def test_method_errors_hide_the_union_tag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^method\.r: .*greater than or equal to 1"):
        config_from_dict(tiny_experiment(tmp_path), ["method.r=0"])


def test_unknown_method_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^method"):
        config_from_dict(tiny_experiment(tmp_path), ["method.type=bitfit"])


def test_model_needs_exactly_one_source(tmp_path: Path) -> None:
    raw = tiny_experiment(tmp_path, model={"name_or_path": "x/y"})
    with pytest.raises(ConfigError, match="model: set exactly one of model.name_or_path or model.tiny"):
        config_from_dict(raw)


def test_split_fractions_must_leave_training_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.split: val \+ test must be below 1"):
        config_from_dict(tiny_experiment(tmp_path), ["data.split.val=0.6", "data.split.test=0.5"])


def test_override_into_a_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^name: is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_malformed_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["train.lr"])


def test_broken_template_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.template: not a valid format string"):
        config_from_dict(tiny_experiment(tmp_path), ["data.template='{instruction'"])


def test_run_dir_is_storage_path_slash_name(tmp_path: Path) -> None:
    config = config_from_dict(tiny_experiment(tmp_path, name="abc"))
    assert config.run_dir == (tmp_path / "runs" / "abc").resolve()


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_packing_with_virtual_tokens_is_refused_naming_the_key(tmp_path: Path, method: str) -> None:
    with pytest.raises(ConfigError, match=rf"^data\.packing: cannot pack with method\.type={method}"):
        config_from_dict(tiny_experiment(tmp_path, method={"type": method}, data={"packing": True}))


def test_classification_head_needs_the_classification_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.head: sequence_classification needs data\.format=classification, got 'instruction'"):
        config_from_dict(tiny_experiment(tmp_path), ["model.head=sequence_classification"])
    with pytest.raises(ConfigError, match=r"^method\.type: prefix tuning cannot train a classification head"):
        config_from_dict(tiny_experiment(tmp_path, method={"type": "prefix"}), ["model.head=sequence_classification", "data.format=classification"])
    config = config_from_dict(tiny_experiment(tmp_path, method={"type": "prompt"}), ["model.head=sequence_classification", "data.format=classification"])
    assert config.model.head == "sequence_classification"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"type": "ia3", "target_modules": ["q_proj"]}, r"^method: feedforward_modules: required when target_modules is a list"),
        ({"type": "ia3", "target_modules": ["q_proj"], "feedforward_modules": ["down_proj"]}, r"^method: feedforward_modules: \['down_proj'\] not in target_modules"),
        ({"type": "prompt", "init": "text"}, r"^method: init_text: required"),
        ({"type": "prefix", "encoder_hidden_size": 16}, r"^method: encoder_hidden_size: only used with prefix_projection"),
        ({"type": "adapter", "activation": "swish"}, r"^method\.activation: Input should be 'relu', 'gelu', 'silu' or 'tanh'"),
        ({"type": "lora", "modules_to_save": []}, r"^method\.modules_to_save: must name at least one module"),
        ({"type": "prompt", "r": 4}, r"^method\.r: unknown key"),
    ],
)
def test_method_fields_are_validated_naming_the_key(tmp_path: Path, method: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_experiment(tmp_path, method=method))


def test_kfold_with_a_time_split_is_refused_naming_both_keys(tmp_path: Path) -> None:
    """Regression: data.kfold with data.split.time_column was accepted, but folds are drawn at
    random, so rows later than a fold's validation rows trained on the future. Pins the error."""
    with pytest.raises(ConfigError, match=r"^data: kfold: folds are drawn without regard to time.*remove data\.kfold or data\.split\.time_column \('day'\)$"):
        config_from_dict(tiny_experiment(tmp_path), ["data.kfold.k=3", "data.split.time_column=day"])
    assert config_from_dict(tiny_experiment(tmp_path), ["data.split.time_column=day"]).data.kfold is None, "a time split alone is fine"
