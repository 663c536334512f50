"""Both engines in one process (world size 1, a gloo group, no Ray): DeepSpeed ZeRO 0-3 must
take the same steps as the torch engine, resume exactly from its checkpoint and export weights
that transformers and peft load."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from peft import PeftModel
from transformers import AutoModelForCausalLM, ByT5Tokenizer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

from rayft.config import (
    AdapterMethod,
    ExperimentConfig,
    FullMethod,
    IA3Method,
    LoraMethod,
    ModelConfig,
    PrefixMethod,
    PromptMethod,
    TinyModelSpec,
    config_from_dict,
)
from rayft.data.batching import Example, collate
from rayft.models.loading import enable_gradient_checkpointing, load_causal_lm, resolve_base_model
from rayft.models.methods import apply_method
from rayft.models.methods.adapter import WEIGHTS_FILE, load_adapters
from rayft.training.checkpoint import (
    MARKER_FILE,
    MODEL_DIR,
    IncompleteCheckpointError,
    Progress,
    load_checkpoint_weights,
    read_marker,
    rng_state,
)
from rayft.training.deepspeed_config import build_deepspeed_config
from rayft.training.engines import DEEPSPEED_DIR, DeepSpeedEngine, Engine, TorchDDPEngine, resolve_precision
from rayft.training.loop import forward_backward
from rayft.training.loopback import free_port
from tests.conftest import tiny_experiment

CPU = torch.device("cpu")
TRAIN = {"lr": 1e-2, "weight_decay": 0.1, "max_grad_norm": 0.5, "grad_accum": 2, "batch_size": 2, "warmup_steps": 1}


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """A one-rank gloo group, as Ray Train would set up, for DeepSpeed's collectives."""
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}.items():  # what Ray Train sets
            env.setenv(name, value)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        yield
        unset_hf_deepspeed_config()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return resolve_base_model(ModelConfig(tiny=TinyModelSpec(hidden=32, layers=2, heads=4)), tmp_path_factory.mktemp("base"))


def _experiment(tmp_path: Path, stage: int, precision: str = "fp32", offload: dict[str, bool] | None = None, **train: object) -> ExperimentConfig:
    deepspeed = {"stage": stage, **(offload or {})}
    raw = tiny_experiment(tmp_path, train={**TRAIN, "backend": "deepspeed", "deepspeed": deepspeed, "precision": precision, **train})
    return config_from_dict(raw, ["scaling.num_workers=1"])


METHODS = {
    "full": FullMethod(),
    "lora": LoraMethod(r=2, alpha=4, dropout=0.0, target_modules="all-linear"),
    "dora": LoraMethod(r=2, alpha=4, dropout=0.0, target_modules="all-linear", use_dora=True),
    "prefix": PrefixMethod(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8),
    "prompt": PromptMethod(num_virtual_tokens=3),
    "ia3": IA3Method(),
    "adapter": AdapterMethod(size=4),
}


def _model(base: str, method: str, checkpointing: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_causal_lm(base)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return apply_method(model, METHODS[method])


def _deepspeed(base: str, method: str, config: ExperimentConfig, max_steps: int = 6, checkpointing: bool = False) -> DeepSpeedEngine:
    assert config.train.deepspeed is not None
    model = _model(base, method, checkpointing)
    return DeepSpeedEngine(model, config.train, max_steps, build_deepspeed_config(config, hidden_size=32), CPU, config.train.precision)


def _steps(tokenizer: ByT5Tokenizer, count: int, seed: int = 0) -> list[list[dict[str, torch.Tensor]]]:
    """`count` optimizer steps of 2 micro-batches each, with different trained-token counts."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(count):
        micro = []
        for size in (2, 2):
            examples = []
            for _ in range(size):
                length = int(torch.randint(8, 20, (1,), generator=generator))
                ids = torch.randint(3, 250, (length,), generator=generator).tolist()
                prompt = length // 2
                examples.append(Example(ids, [-100] * prompt + ids[prompt:], prompt, ""))
            micro.append(collate(examples, tokenizer.pad_token_id))
        steps.append(micro)
    return steps


def _train(engine: Engine, steps: list[list[dict[str, torch.Tensor]]]) -> list[tuple[float, float]]:
    """(loss, lr after the step) per optimizer step, as the loop takes it."""
    trace = []
    engine.model.train()  # as the loop does; gradient checkpointing acts only in training mode
    for micro in steps:
        loss = forward_backward(engine, micro, CPU)
        engine.clip(0.5)
        engine.step()
        engine.zero_grad()
        trace.append((float(loss), engine.lr()))
    return trace


def _weights(engine: Engine) -> dict[str, torch.Tensor]:
    import deepspeed

    module = engine.unwrapped
    with deepspeed.zero.GatheredParameters(list(module.parameters()), enabled=is_deepspeed_zero3_enabled()):
        return {name: p.detach().float().clone() for name, p in module.named_parameters() if p.requires_grad}


def _release(engine: DeepSpeedEngine) -> None:
    """Drop the engine (and with it transformers' ZeRO-3 flag) before the next test builds models."""
    del engine
    gc.collect()
    unset_hf_deepspeed_config()


@pytest.mark.parametrize(
    ("stage", "method", "checkpointing"),
    [
        (0, "full", False), (1, "full", False), (2, "full", False), (3, "full", False), (2, "lora", False), (3, "lora", False),
        (3, "full", True),
        # every other method under ZeRO-2; ZeRO-3 for the two that add modules of their own, and for DoRA,
        # whose magnitudes are computed from the base weight that ZeRO-3 holds as shards
        (2, "dora", False), (2, "prefix", False), (2, "prompt", False), (2, "ia3", False), (2, "adapter", False),
        (3, "adapter", False), (3, "prefix", False), (3, "dora", False),
    ],
)
def test_deepspeed_takes_the_same_steps_as_the_torch_engine(
    tmp_path: Path, base: str, stage: int, method: str, checkpointing: bool, byte_tokenizer: ByT5Tokenizer
) -> None:
    """Pins the loss scaling: DeepSpeed must not divide the token-weighted loss again by
    gradient_accumulation_steps, must clip at train.max_grad_norm and follow rayft's schedule
    (also with gradient checkpointing recomputing ZeRO-3's gathered blocks), for every method:
    peft's (LoRA, DoRA's magnitudes, prefix MLP, prompt embeddings, IA3 vectors) and rayft's
    bottleneck adapters, whose trained tensors must all move (none left out of DeepSpeed's optimizer)."""
    config = _experiment(tmp_path, stage)
    steps = _steps(byte_tokenizer, 3)
    reference = TorchDDPEngine(_model(base, method), config.train, 6, CPU, "fp32")
    initial = _weights(reference)
    expected = _train(reference, steps)
    engine = _deepspeed(base, method, config, checkpointing=checkpointing)
    assert engine.unwrapped.is_gradient_checkpointing == checkpointing
    got = _train(engine, steps)
    for (loss, lr), (want_loss, want_lr) in zip(got, expected):
        assert loss == pytest.approx(want_loss, rel=1e-5)
        assert lr == pytest.approx(want_lr, rel=1e-12)
    want = _weights(reference)
    got_weights = _weights(engine)
    assert set(got_weights) == set(want) == set(initial)
    for name, tensor in got_weights.items():
        assert not torch.equal(want[name], initial[name]), f"{name} never trained"
        torch.testing.assert_close(tensor, want[name], rtol=1e-4, atol=1e-5, msg=name)
    _release(engine)


EXPORTED_WEIGHTS = {"full": "model.safetensors", "adapter": WEIGHTS_FILE} | dict.fromkeys(["lora", "prefix", "prompt"], "adapter_model.safetensors")


@pytest.mark.parametrize(("stage", "method"), [(2, "lora"), (3, "full"), (3, "lora"), (3, "adapter"), (3, "prefix"), (3, "prompt")])
def test_deepspeed_checkpoint_resumes_exactly_and_exports_for_transformers(
    tmp_path: Path, base: str, stage: int, method: str, byte_tokenizer: ByT5Tokenizer
) -> None:
    """Pins exact resume from DeepSpeed's shards (frozen base left out for partial methods) and the
    export gathered from them under ZeRO-3: peft's LoRA and prompt embeddings, rayft's bottleneck
    adapters (gathered into their own files) and a prefix MLP, which peft exports as its output
    (computed from the gathered shards) while trainable.safetensors keeps the MLP itself."""
    config = _experiment(tmp_path, stage)
    steps = _steps(byte_tokenizer, 4, seed=1)
    engine = _deepspeed(base, method, config)
    _train(engine, steps[:2])
    directory = tmp_path / "ckpt"
    directory.mkdir()
    assert engine.save(directory, byte_tokenizer, Progress(2, 0, 4), [rng_state()], {"loss": 1.0})
    saved = _weights(engine)
    continued = _train(engine, steps[2:])
    _release(engine)

    marker = read_marker(directory)
    assert marker["step"] == 2 and (directory / MARKER_FILE).is_file()
    assert any(name.startswith(f"{DEEPSPEED_DIR}/") for name in marker["files"]) and "trainer_state.pt" in marker["files"]
    exported = sorted(p.name for p in (directory / "model").glob("*.safetensors"))
    assert exported == [EXPORTED_WEIGHTS[method]]

    # the export loads with transformers (and peft, or rayft's load_adapters) and holds the trained weights
    loaded = AutoModelForCausalLM.from_pretrained(base)
    if method in ("lora", "prefix", "prompt"):
        loaded = PeftModel.from_pretrained(loaded, directory / "model")
    elif method == "adapter":
        loaded = load_adapters(loaded, directory / "model")
    else:
        loaded = AutoModelForCausalLM.from_pretrained(directory / "model")
    if method == "prefix":
        rebuilt = _model(base, method)  # with the MLP, loaded from the exact trained tensors
        load_checkpoint_weights(rebuilt, directory / MODEL_DIR)
        trained = dict(rebuilt.named_parameters())
        with torch.no_grad():  # the exported prefix (the MLP's output) computes what the MLP computes
            ids = torch.tensor([[5, 17, 33, 90, 120, 7]])
            torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, rebuilt.eval()(input_ids=ids).logits)
    else:
        trained = dict(loaded.named_parameters())
    for name, tensor in saved.items():
        torch.testing.assert_close(trained[name], tensor, msg=name)

    restored = _deepspeed(base, method, config)
    assert restored.restore(directory, rank=0, world_size=1) == Progress(2, 0, 4)
    for name, tensor in _weights(restored).items():
        torch.testing.assert_close(tensor, saved[name], msg=name)
    resumed = _train(restored, steps[2:])
    assert [loss for loss, _ in resumed] == pytest.approx([loss for loss, _ in continued], rel=1e-6)
    assert [lr for _, lr in resumed] == [lr for _, lr in continued]
    _release(restored)


def test_a_shard_missing_from_a_deepspeed_checkpoint_is_refused(tmp_path: Path, base: str, byte_tokenizer: ByT5Tokenizer) -> None:
    """Pins the atomic promise across ranks: the marker lists every rank's files, so a checkpoint
    whose other-rank shard never arrived is not used even though rank 0's marker did."""
    config = _experiment(tmp_path, 2)
    engine = _deepspeed(base, "lora", config)
    directory = tmp_path / "ckpt"
    directory.mkdir()
    engine.save(directory, byte_tokenizer, Progress(1, 0, 2), [rng_state()], {})
    shard = next((directory / DEEPSPEED_DIR).rglob("*optim_states.pt"))
    shard.unlink()
    with pytest.raises(IncompleteCheckpointError, match="missing or incomplete"):
        engine.restore(directory, rank=0, world_size=1)
    _release(engine)


def test_deepspeed_bf16_trains_bf16_weights_on_cpu_and_fp16_falls_back(tmp_path: Path, base: str, byte_tokenizer: ByT5Tokenizer) -> None:
    repeated = _steps(byte_tokenizer, 1) * 5  # one step's batches again and again: the loss must fall
    engine = _deepspeed(base, "full", _experiment(tmp_path, 2, precision="bf16"))
    assert {p.dtype for p in engine.unwrapped.parameters()} == {torch.bfloat16}
    trace = _train(engine, repeated)
    assert trace[-1][0] < trace[0][0] - 1.0
    _release(engine)

    config = _experiment(tmp_path, 2, precision="fp16")
    engine = DeepSpeedEngine(_model(base, "full"), config.train, 6, build_deepspeed_config(config), CPU, resolve_precision("fp16", CPU))
    assert engine.precision == "fp32" and engine.config["fp16"]["enabled"] is False
    assert {p.dtype for p in engine.unwrapped.parameters()} == {torch.float32}
    trace = _train(engine, repeated)
    assert trace[-1][0] < trace[0][0] - 1.0
    _release(engine)


@pytest.mark.parametrize(
    ("stage", "method", "offload"),
    [(2, "full", {"offload_optimizer": True}), (3, "lora", {"offload_optimizer": True, "offload_params": True})],
    ids=["zero2-optimizer", "zero3-optimizer-and-params"],
)
def test_cpu_offload_takes_the_same_steps_as_the_torch_engine(
    tmp_path: Path, base: str, stage: int, method: str, offload: dict[str, bool], byte_tokenizer: ByT5Tokenizer
) -> None:
    """Pins train.deepspeed.offload_optimizer/offload_params end to end: DeepSpeed steps rayft's torch
    AdamW on its CPU copy of the fp32 weights (not its own DeepSpeedCPUAdam, whose C++ op would
    compile first) and ZeRO-3 pages the parameters in from CPU, with the torch engine's losses and weights."""
    config = _experiment(tmp_path, stage, offload=offload)
    steps = _steps(byte_tokenizer, 3)
    reference = TorchDDPEngine(_model(base, method), config.train, 6, CPU, "fp32")
    expected = _train(reference, steps)
    engine = _deepspeed(base, method, config)
    zero = engine.config["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == ("cpu" if stage == 3 else "none")
    # DeepSpeed's ZeRO optimizer took the offload path (on this CPU-only machine the "device" copy is
    # CPU-to-CPU, so this pins DeepSpeed's offload code and numbers, not memory moved off an accelerator)
    if stage == 2:
        assert engine.optimizer.cpu_offload
    else:
        assert engine.optimizer.offload_optimizer and engine.optimizer.offload_param
    assert type(_torch_optimizer(engine.optimizer)) is torch.optim.AdamW
    got = _train(engine, steps)
    assert [loss for loss, _ in got] == pytest.approx([loss for loss, _ in expected], rel=1e-5)
    assert [lr for _, lr in got] == pytest.approx([lr for _, lr in expected], rel=1e-12)
    want = _weights(reference)
    for name, tensor in _weights(engine).items():
        torch.testing.assert_close(tensor, want[name], rtol=1e-4, atol=1e-5, msg=name)
    _release(engine)


def _torch_optimizer(optimizer: object) -> object:
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer  # DeepSpeed's ZeRO optimizers wrap the client's
    return optimizer
