"""evaluate_split in 2 real processes joined by a gloo process group on 127.0.0.1 (no Ray).

The ranks are forked from the test process: they inherit torch, transformers and the metric
libraries already imported (spawned ones re-import them, about 10 s each on 2 cores), and the
models and examples built here. Each forked rank runs torch on one thread, as DataLoader
workers do (an OpenMP thread pool does not survive a fork).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import socket
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import ByT5Tokenizer

from rayft.config import TinyModelSpec, config_from_dict
from rayft.data.batching import Example
from rayft.data.tokenize import IGNORE_INDEX
from rayft.evaluate import metrics as m
from rayft.evaluate.validation import EvalTask, evaluate_split
from rayft.models.loading import build_tiny_model
from rayft.training.loopback import free_port
from tests.conftest import examples_from_records, tiny_experiment

WORLD = 2
BATCH = 2
BOOST = 6.0
"""Added to one token's logit: greedy decoding and label scoring always pick it, while the
other logits keep the model's context-dependent values, so token losses differ."""
DEADLINE_S = 120

QA_RECORDS = [  # rank 0 evaluates examples 0, 2, 4; rank 1 examples 1, 3
    {"question": "Say x six times", "answer": "xxxxxx"},
    {"question": "Hi", "answer": "yyy"},
    {"question": "A much longer question about nothing in particular, asked at length?", "answer": ["no", "xxxxxx"]},
    {"question": "Q", "answer": "x"},
    {"question": "Another one", "answer": "XXXXXX!"},
]
CLASSIFICATION_RECORDS = [
    {"text": "good film", "label": "pos"},
    {"text": "bad", "label": "neg"},
    {"text": "a very long and really quite wonderful film", "label": "pos"},
    {"text": "meh", "label": "mixed"},
    {"text": "dull", "label": "neg"},
]
LABELS = ["neg", "pos"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on one thread: OpenMP's spinning threads cost seconds per forward on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _biased(tokenizer: ByT5Tokenizer, letter: str) -> nn.Module:
    """The seeded tiny model with BOOST added to `letter`'s logit (its head gets a bias)."""
    model = build_tiny_model(TinyModelSpec(hidden=32, heads=4), tokenizer).eval()
    head = nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer(letter, add_special_tokens=False)["input_ids"][0]] = BOOST
    model.lm_head = head
    return model




def _token_losses(model: nn.Module, example: Example) -> tuple[float, int]:
    """(summed loss, trained tokens) of one example, alone in its batch (no padding)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1].double()
    targets = torch.tensor(example.labels[1:])
    kept = targets != IGNORE_INDEX
    return F.cross_entropy(logits[kept], targets[kept], reduction="sum").item(), int(kept.sum())



def _loopback_interface() -> str:
    return next(name for _, name in socket.if_nameindex() if name.startswith("lo"))


def _rank(rank: int, port: int, jobs: list[tuple[nn.Module, list[Example], EvalTask]], tokenizer: ByT5Tokenizer, out: Path) -> None:
    """One rank: join the group, evaluate every job, write the outcomes (or the traceback)."""
    try:
        torch.set_num_threads(1)
        os.environ["GLOO_SOCKET_IFNAME"] = _loopback_interface()  # gloo's own connections stay on 127.0.0.1 too
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
        )
        try:
            outcomes = [evaluate_split(model, tokenizer, examples, task, BATCH, rank, WORLD) for model, examples, task in jobs]
        finally:
            dist.destroy_process_group()
        (out / f"rank{rank}.pkl").write_bytes(pickle.dumps([(o.metrics, o.answers) for o in outcomes]))
    except BaseException:
        (out / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _run_ranks(jobs: list[tuple[nn.Module, list[Example], EvalTask]], tokenizer: ByT5Tokenizer, out: Path) -> list[list[Any]]:
    context = multiprocessing.get_context("fork")
    port = free_port()
    processes = [context.Process(target=_rank, args=(rank, port, jobs, tokenizer, out)) for rank in range(WORLD)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + DEADLINE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    errors = "\n".join(path.read_text() for path in sorted(out.glob("*.error")))
    assert not hung, f"{len(hung)} rank(s) still running after {DEADLINE_S} s\n{errors}"
    assert [process.exitcode for process in processes] == [0] * WORLD, errors
    return [pickle.loads((out / f"rank{rank}.pkl").read_bytes()) for rank in range(WORLD)]


def test_two_ranks_on_an_uneven_split_report_the_one_process_metrics(tmp_path: Path) -> None:
    """Pins cross-worker aggregation: 5 examples over 2 ranks (3 and 2, of different lengths),
    eval_loss is the token-weighted loss over all examples (summed losses and token counts are
    all-reduced, not means of rank means), answers are gathered back in example order, the
    corpus and label metrics are scored once over all of them, counts (unknown references,
    answered) are totals, and both ranks return the identical dict a single process computes."""
    tokenizer = ByT5Tokenizer()
    qa_config = config_from_dict(
        tiny_experiment(tmp_path, data={"format": "qa"}, eval={"metrics": ["perplexity", "exact_match", "f1", "bleu"]})
    )
    label_config = config_from_dict(
        tiny_experiment(tmp_path, data={"format": "classification"}, eval={"metrics": ["accuracy", "f1_macro", "recall_micro"]})
    )
    qa = (_biased(tokenizer, "x"), examples_from_records(tokenizer, qa_config.data, QA_RECORDS), EvalTask.from_config(qa_config))
    labelled = (
        _biased(tokenizer, "p"),
        examples_from_records(tokenizer, label_config.data, CLASSIFICATION_RECORDS),
        EvalTask.from_config(label_config, labels=LABELS),
    )
    single = [evaluate_split(model, tokenizer, examples, task, BATCH, rank=0, world_size=1) for model, examples, task in (qa, labelled)]

    ranks = _run_ranks([qa, labelled], tokenizer, tmp_path)

    for job, ((model, examples, _), one_process) in enumerate(zip((qa, labelled), single, strict=True)):
        (metrics0, answers0), (metrics1, answers1) = ranks[0][job], ranks[1][job]
        assert metrics0 == metrics1 and answers0 == answers1  # identical on every rank (early stopping relies on it)
        assert answers0 == one_process.answers
        assert metrics0 == pytest.approx(one_process.metrics, rel=1e-6)

        sums = [_token_losses(model, example) for example in examples]
        token_counts = [count for _, count in sums]
        assert len(set(token_counts)) > 1, "the examples must differ in trained tokens"
        by_hand = sum(loss for loss, _ in sums) / sum(token_counts)
        assert metrics0["eval_loss"] == pytest.approx(by_hand, rel=1e-5)
        rank_means = [sum(l for l, _ in sums[r::WORLD]) / sum(c for _, c in sums[r::WORLD]) for r in range(WORLD)]
        assert abs(sum(rank_means) / WORLD - by_hand) > 1e-3, "a mean of rank means must be told apart"

    qa_metrics, qa_answers = ranks[0][0]
    references = [["xxxxxx"], ["yyy"], ["no", "xxxxxx"], ["x"], ["XXXXXX!"]]
    assert (qa_answers.predictions, qa_answers.references) == (["xxxxxx"] * 5, references)
    # right: examples 0, 2 (its second answer) and 4 (after normalisation); "x" shares no token with "xxxxxx"
    assert (qa_metrics["exact_match"], qa_metrics["f1"], qa_metrics["answered"]) == (3 / 5, 3 / 5, 5.0)
    assert qa_metrics["bleu"] == pytest.approx(m.bleu(["xxxxxx"] * 5, references), rel=1e-12)
    assert qa_metrics["perplexity"] == pytest.approx(math.exp(qa_metrics["eval_loss"]), rel=1e-12)

    label_metrics, label_answers = ranks[0][1]
    assert label_answers.predictions == ["pos"] * 5
    # 2 of 5 right; pos: P = 2/5, R = 1, F1 = 4/7; neg: never predicted, F1 = 0; 4 references are labels
    assert label_metrics == {
        "eval_loss": pytest.approx(label_metrics["eval_loss"]), "accuracy": pytest.approx(2 / 5),
        "f1_macro": pytest.approx(2 / 7), "recall_micro": pytest.approx(2 / 4),
        "invalid_predictions": 0.0, "unknown_references": 1.0, "answered": 5.0,
    }
