"""Evaluate a split across workers: losses as summed counts, answers gathered, metrics once.

Each rank takes every world-th example. Losses are summed (token loss, token count) and
all-reduced, so eval_loss is exact however unevenly the examples divide (no means of means).
Answer-based metrics are corpus-level (BLEU's n-gram counts, ROUGE's per-example mean, F1 over
labels), so every rank's (index, prediction, references) triples are gathered, put back in example
order, scored once on rank 0 and the scores broadcast: every rank returns identical metrics, which
early stopping relies on. Forward passes use the unwrapped model: DDP's forward may run collectives
(buffer broadcasts), and ranks run different numbers of evaluation batches.

The same function serves training-time validation, the forgetting monitor's general set, and
`rayft eval` (with the same number of workers and batch size it reproduces the training-time numbers).

Under DeepSpeed ZeRO-3 each forward pass gathers the weights from every rank, so all ranks must
run the same passes: the ranks with one example fewer add an uncounted one (no trained tokens,
answer discarded), and generate() keeps stepping until every rank is done.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled

from rayft.config import GENERAL_KEYS, METRICS, ExperimentConfig, GenerateConfig
from rayft.data.batching import Example, collate
from rayft.data.tokenize import IGNORE_INDEX
from rayft.evaluate.classification import head_loss_sums, predict_head_labels
from rayft.evaluate.classify import predict_labels
from rayft.evaluate.generation import generate_answers
from rayft.evaluate.metrics import perplexity
from rayft.evaluate.registry import Answers, MetricContext, compute_metrics


@dataclass
class EvalTask:
    """What every evaluation of a run computes; identical on every rank."""

    metric_names: list[str]
    classification: bool
    response_prefix: str
    generate: GenerateConfig
    max_answered: int | None
    head: bool = False
    """A classification head (model.head: sequence_classification) scores examples, not tokens."""
    context: MetricContext = field(default_factory=MetricContext)

    @classmethod
    def from_config(cls, config: ExperimentConfig, labels: list[str] | None = None) -> EvalTask:
        head = config.model.head == "sequence_classification"
        return cls(
            metric_names=config.metric_names,
            classification=config.data.format == "classification",
            response_prefix=config.data.response_prefix,
            generate=config.eval.generate,
            max_answered=None if head else config.eval.max_generate_examples,  # a head answers every example in one pass
            head=head,
            context=MetricContext(labels=labels, bertscore=config.eval.bertscore),
        )

    @property
    def answers_needed(self) -> bool:
        return any(METRICS[name].kind != "loss" for name in self.metric_names)


@dataclass
class EvalOutcome:
    metrics: dict[str, float]
    answers: Answers | None = None
    """Every answered example in order (identical on every rank); None when no metric needs answers."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def _gather(local: list[Any]) -> list[Any]:
    """Every rank's items, concatenated (rank order)."""
    if not _distributed():
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def _from_rank_zero(value: Any) -> Any:
    if not _distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@torch.no_grad()
def _in_lockstep(mine: list[Example], shared: Sequence[Example], world_size: int) -> list[Example]:
    """This rank's share of `shared`, padded to ceil(len(shared) / world_size) with uncounted
    copies when ranks must run the same forward passes (ZeRO-3); unchanged otherwise."""
    if world_size == 1 or not shared or not is_deepspeed_zero3_enabled():
        return mine
    filler = dataclasses.replace(shared[0], labels=[IGNORE_INDEX] * len(shared[0].labels))
    return mine + [filler] * (math.ceil(len(shared) / world_size) - len(mine))


def loss_sums(model: nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int) -> tuple[float, float]:
    """(summed token loss, trained tokens) over `examples`."""
    device = next(model.parameters()).device
    loss_sum, token_count = 0.0, 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(list(examples[start : start + batch_size]), pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logits = logits[:, -batch["input_ids"].shape[1] :]  # prompt tuning returns logits for its virtual tokens too
        shifted_labels = batch["labels"][:, 1:]
        loss_sum += F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), shifted_labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        token_count += (shifted_labels != IGNORE_INDEX).sum().item()
    return loss_sum, token_count


def answerable(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """Examples with a prompt and a reference answer, the first `limit` of them."""
    usable = [example for example in examples if example.reference and example.prompt_len > 0]
    return usable if limit is None else usable[:limit]


def answer_examples(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], task: EvalTask, batch_size: int
) -> list[str]:
    """Predicted label (classification: constrained to the label set; a head: its highest logit)
    or generated answer per example."""
    if task.head:
        assert task.context.labels is not None, "a classification head needs the label set"
        return predict_head_labels(model, examples, tokenizer.pad_token_id, task.context.labels, batch_size)
    prompts = [example.input_ids[: example.prompt_len] for example in examples]
    if task.classification and task.context.labels:
        return predict_labels(model, tokenizer, prompts, task.context.labels, task.response_prefix, batch_size)
    return generate_answers(model, tokenizer, prompts, task.generate.max_new_tokens, batch_size, task.generate.num_beams)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    task: EvalTask,
    batch_size: int,
    rank: int,
    world_size: int,
    general: Sequence[Example] = (),
) -> EvalOutcome:
    """eval_loss, the configured metrics and (with a general set) general_eval_loss/perplexity."""
    module = getattr(model, "module", model)  # unwrap DDP; peft models generate themselves
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    pad_id = tokenizer.pad_token_id
    scored = head_loss_sums if task.head else loss_sums
    loss_sum, token_count = scored(module, _in_lockstep(list(examples[rank::world_size]), examples, world_size), pad_id, batch_size)
    general_sum, general_count = loss_sums(module, _in_lockstep(list(general[rank::world_size]), general, world_size), pad_id, batch_size)

    answers: Answers | None = None
    if task.answers_needed:
        chosen = answerable(examples, task.max_answered)
        mine = list(range(len(chosen)))[rank::world_size]
        prompts = _in_lockstep([chosen[i] for i in mine], chosen, world_size)
        predicted = answer_examples(module, tokenizer, prompts, task, batch_size)[: len(mine)]
        triples = sorted(_gather([(i, p, [chosen[i].reference, *chosen[i].alternatives]) for i, p in zip(mine, predicted)]))
        answers = Answers(predictions=[p for _, p, _ in triples], references=[r for _, _, r in triples])

    loss_sum, token_count, general_sum, general_count = _all_reduce_sum([loss_sum, token_count, general_sum, general_count], device)
    if was_training:
        module.train()

    eval_loss = loss_sum / max(token_count, 1.0)
    metrics = {"eval_loss": eval_loss}
    if "perplexity" in task.metric_names:
        metrics["perplexity"] = perplexity(eval_loss)
    if answers is not None:
        scores = compute_metrics(task.metric_names, answers, task.context) if rank == 0 else None
        metrics |= _from_rank_zero(scores)
        metrics["answered"] = float(len(answers.predictions))
    if general:
        general_loss = general_sum / max(general_count, 1.0)
        metrics |= dict(zip(GENERAL_KEYS, (general_loss, perplexity(general_loss))))
    return EvalOutcome(metrics, answers)
