"""`rayft export` on checkpoints written by the same code the workers use (no Ray): merged models
load with transformers alone (in a process that cannot import rayft) and give the checkpoint's
logits; adapters load with peft; what cannot merge is refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM, ByT5Tokenizer

from rayft.cli import main
from rayft.config import AdapterMethod, FullMethod, IA3Method, LoraMethod, PromptMethod, config_from_dict, to_yaml
from rayft.data.classification import LABELS_FILE
from rayft.models.loading import load_causal_lm, load_sequence_classifier, resolve_base_model
from rayft.models.methods import MethodContext, apply_method
from rayft.models.methods.adapter import load_adapters
from rayft.training.checkpoint import MARKER_FILE, Progress, rng_state, save_checkpoint
from rayft.training.export import ExportError, export_checkpoint
from tests.conftest import tiny_experiment

IDS = [[5, 17, 33, 90, 120, 7, 64, 3]]

# Runs in a fresh interpreter (-I: no PYTHONPATH, no cwd on sys.path) with rayft's editable-install
# hooks removed, and proves rayft cannot be imported before loading with transformers alone.
# Arguments: triples of (Auto class, model directory, file for the logits); one interpreter for all.
LOAD_WITHOUT_RAYFT = """
import importlib.util, sys
sys.meta_path = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
sys.path = [p for p in sys.path if "__editable__" not in p]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("rayft") is None, "rayft must not be importable here"
import torch, transformers
args = sys.argv[1:]
for auto, path, out in zip(args[0::3], args[1::3], args[2::3]):
    model = getattr(transformers, auto).from_pretrained(path)
    with torch.no_grad():
        torch.save(model(input_ids=torch.tensor(%r)).logits, out)
""" % (IDS,)


def _logits_without_rayft(models: list[tuple[str, Path]], tmp_path: Path) -> list[torch.Tensor]:
    outs = [tmp_path / f"logits{i}.pt" for i in range(len(models))]
    args = [str(item) for (auto, path), out in zip(models, outs) for item in (auto, path, out)]
    subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_RAYFT, *args], check=True, cwd=tmp_path)
    return [torch.load(out) for out in outs]


def _checkpoint(tmp_path: Path, method, head_labels: list[str] | None = None) -> tuple[Path, str, torch.nn.Module]:
    """A run directory like `rayft train` leaves it (config.yaml, base_model, a checkpoint) with trained-looking weights."""
    extra = {"model": {"tiny": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "max_position": 128}, "head": "sequence_classification"},
             "data": {"format": "classification"}} if head_labels else {}
    config = config_from_dict(tiny_experiment(tmp_path, name="exp", method=method.model_dump(), **extra))
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    base = resolve_base_model(config.model, run_dir)
    torch.manual_seed(0)
    if head_labels:
        (run_dir / LABELS_FILE).write_text(json.dumps(head_labels))
        model = apply_method(load_sequence_classifier(base, head_labels, 0), method, MethodContext("SEQ_CLS"))
    else:
        model = apply_method(load_causal_lm(base), method, MethodContext(tokenizer_path=base))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = run_dir / "checkpoint_000001"
    save_checkpoint(checkpoint, model, ByT5Tokenizer(), optimizer, scheduler, Progress(4), [rng_state()], {"eval_loss": 1.25})
    return checkpoint, base, model.eval()


def test_merged_and_full_exports_load_with_transformers_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Merged DoRA, merged IA3, full fine-tuning and a merged classifier: each loads in a process
    without rayft and gives the logits of the checkpoint's own (peft) model. IA3 pins the merge of
    vectors that scale outputs (k, v) and, for the feed-forward down projection, inputs."""
    dora_ckpt, base, _ = _checkpoint(tmp_path / "d", LoraMethod(r=4, target_modules="all-linear", use_dora=True, dropout=0.0))
    assert main(["export", str(dora_ckpt), str(tmp_path / "merged"), "--merge"]) == 0
    assert "exported merged model" in capsys.readouterr().out
    merged = tmp_path / "merged"
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= {p.name for p in merged.iterdir()}
    assert not (merged / "adapter_config.json").exists()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dora_ckpt / "model").eval()

    ia3_ckpt, _, _ = _checkpoint(tmp_path / "i", IA3Method())
    ia3 = export_checkpoint(ia3_ckpt, tmp_path / "ia3", merge=True)
    assert ia3.kind == "merged" and not (ia3.out / "adapter_config.json").exists()
    assert "method: ia3" in (ia3.out / "README.md").read_text()
    ia3_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), ia3_ckpt / "model").eval()
    assert ia3_peft.peft_config["default"].feedforward_modules == {"down_proj"}  # both kinds of scaling merge

    full_ckpt, _, full_model = _checkpoint(tmp_path / "f", FullMethod())
    full = export_checkpoint(full_ckpt, tmp_path / "full", merge=True)  # nothing to merge: accepted
    assert full.kind == "full" and "tiny llama built by rayft" in (full.out / "README.md").read_text()

    cls_ckpt, _, classifier = _checkpoint(tmp_path / "c", LoraMethod(r=2, dropout=0.0), head_labels=["neg", "neu", "pos"])
    cls = export_checkpoint(cls_ckpt, tmp_path / "cls", merge=True)
    assert json.loads((cls.out / "config.json").read_text())["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert "AutoModelForSequenceClassification" in cls.load_snippet

    loaded = _logits_without_rayft(
        [("AutoModelForCausalLM", merged), ("AutoModelForCausalLM", ia3.out), ("AutoModelForCausalLM", full.out),
         ("AutoModelForSequenceClassification", cls.out)],
        tmp_path,
    )
    ids = torch.tensor(IDS)
    with torch.no_grad():
        expected = [peft_model(input_ids=ids).logits, ia3_peft(input_ids=ids).logits, full_model(input_ids=ids).logits,
                    classifier(input_ids=ids).logits]
        base_logits = AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
    for got, want in zip(loaded, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loaded[1], base_logits, atol=1e-3)  # the merged IA3 vectors changed the model

    card = (merged / "README.md").read_text()
    assert "library_name: transformers" in card and "method: lora (" in card and "use_dora=True" in card
    assert "| eval_loss | - | - | - | 1.2500 |" in card  # no result.json yet: the checkpoint's own metrics
    assert 'AutoModelForCausalLM.from_pretrained("' in card


def test_adapter_export_loads_with_peft_and_records_the_base(tmp_path: Path) -> None:
    checkpoint, base, model = _checkpoint(tmp_path, LoraMethod(r=2, dropout=0.0))
    exported = export_checkpoint(checkpoint, tmp_path / "adapter")
    assert exported.kind == "peft-adapter"
    assert json.loads((exported.out / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    reloaded = AutoPeftModelForCausalLM.from_pretrained(exported.out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=torch.tensor(IDS)).logits, model(input_ids=torch.tensor(IDS)).logits)


@pytest.mark.parametrize("method", [LoraMethod(r=2, dropout=0.0), AdapterMethod(size=4)], ids=["peft", "bottleneck"])
def test_the_cards_load_snippet_loads_an_unmerged_classifier(tmp_path: Path, method) -> None:
    """Pins the classifier's adapter-only load: the base needs the label count before the adapter fills its head."""
    checkpoint, _, model = _checkpoint(tmp_path, method, head_labels=["neg", "neu", "pos"])
    exported = export_checkpoint(checkpoint, tmp_path / "out")
    assert exported.load_snippet in (exported.out / "README.md").read_text()
    scope: dict = {}
    exec(exported.load_snippet, scope)
    with torch.no_grad():
        torch.testing.assert_close(scope["model"].eval()(input_ids=torch.tensor(IDS)).logits, model(input_ids=torch.tensor(IDS)).logits)
    assert scope["model"].config.id2label == {0: "neg", 1: "neu", 2: "pos"}


def test_what_cannot_merge_is_refused_and_exports_unmerged(tmp_path: Path) -> None:
    prompt_ckpt, _, _ = _checkpoint(tmp_path / "p", PromptMethod(num_virtual_tokens=3))
    with pytest.raises(ExportError, match=r"^--merge: prompt_tuning adds virtual tokens, not a weight update"):
        export_checkpoint(prompt_ckpt, tmp_path / "prompt", merge=True)
    adapter_ckpt, base, model = _checkpoint(tmp_path / "a", AdapterMethod(size=4))
    with pytest.raises(ExportError, match=r"^--merge: bottleneck adapters are non-linear layers"):
        export_checkpoint(adapter_ckpt, tmp_path / "adapter", merge=True)
    exported = export_checkpoint(adapter_ckpt, tmp_path / "adapter")
    assert exported.kind == "bottleneck-adapter" and "load_adapters" in (exported.out / "README.md").read_text()
    reloaded = load_adapters(AutoModelForCausalLM.from_pretrained(base), exported.out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=torch.tensor(IDS)).logits, model(input_ids=torch.tensor(IDS)).logits)


def test_bad_export_targets_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, _, _ = _checkpoint(tmp_path, LoraMethod(r=2))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["export", str(checkpoint), str(tmp_path / "busy")]) == 2
    assert "OUT: " in capsys.readouterr().err
    (checkpoint / MARKER_FILE).unlink()
    assert main(["export", str(checkpoint), str(tmp_path / "new")]) == 2
    assert "CHECKPOINT: " in (err := capsys.readouterr().err) and "the save did not finish" in err
