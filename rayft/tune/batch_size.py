"""The largest per-worker batch that fits, found before a sweep (tune.batch_size_search).

One Ray task with a worker's resources builds the model and method and runs full training
steps (forward, backward, optimizer) on batches of max_length tokens: doubling until a step does
not fit, then bisecting. On a GPU "does not fit" is torch's OutOfMemoryError; on a CPU, where
running out of memory kills the process instead of raising, it is the process's peak RSS passing
`memory_gb`.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

import ray
import torch

from rayft.config import ExperimentConfig

logger = logging.getLogger("rayft.tune")


def search_largest(fits: Callable[[int], bool], upper: int) -> int:
    """Largest b in [1, upper] with fits(b), assuming fits is monotone (0 if even 1 fails)."""
    low, high = 0, None
    size = 1
    while size <= upper:
        if not fits(size):
            high = size
            break
        low, size = size, size * 2
    high = high if high is not None else upper + 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _train_step_fits(config: ExperimentConfig, base_model: str, batch_size: int, memory_gb: float | None) -> bool:
    from rayft.models.loading import load_causal_lm
    from rayft.models.methods import apply_method

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = apply_method(load_causal_lm(base_model), config.method).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.train.lr)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch_size, config.data.max_length), device=device)
    try:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
    except torch.OutOfMemoryError:
        return False
    finally:
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return memory_gb is None or _peak_rss_gb() <= memory_gb


def find_batch_size(config: ExperimentConfig, base_model: str) -> int:
    """Search on worker-sized Ray tasks, each in a fresh process (max_calls=1), so one size's peak
    memory never counts against the next; returns the largest batch size that fits."""
    section = config.tune
    assert section is not None and section.batch_size_search is not None
    search = section.batch_size_search
    resources = {"num_cpus": config.scaling.cpus_per_worker, "num_gpus": 1 if config.scaling.use_gpu else 0}

    @ray.remote(max_retries=0, max_calls=1, **resources)
    def probe(size: int) -> bool:
        torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
        return _train_step_fits(config, base_model, size, search.memory_gb)

    found = search_largest(lambda size: ray.get(probe.remote(size)), search.max)
    logger.info("batch-size search: %d per worker fits (max_length %d, up to %d tried)", found, config.data.max_length, search.max)
    return found
