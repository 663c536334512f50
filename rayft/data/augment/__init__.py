"""Augmentation of the training split as Ray Data transforms (data.augment).

    train = augment_train(train, config.data, seed).materialize()
    counts = augmentation_counts(train, config.data, seed)   # {op: {"added": n, "discarded": m}}

Rows keep the input columns (source, line, entry, file_index, record, copy) and gain `augmented`:
"" for the original rows, the op's label for the rows an op made. Op i's copy k of a source row
has copy = (copies of the ops before i) + k, so (file_index, line, copy) stays a unique key;
synthetic (template) rows have file_index -1 - i, line 1..count and copy 1. Every random choice
is seeded from (seed, op index, file_index, line, copy number): the same seed and input give the
same rows whatever the block layout.

Token noise runs as tasks, paraphrase as an actor pool (the model loads once per actor), one
after the other on the same stream; template rows are made in the driver and appended.
Materialize the result before Ray Train workers take the CPUs: the actors need theirs.
"""

from __future__ import annotations


import ray.data

from rayft.augment_config import ParaphraseOp, SynonymOp, TemplateOp
from rayft.config import DataConfig
from rayft.data.augment.counts import augmentation_counts
from rayft.data.augment.noise import NoiseBatch, NoiseJob, load_synonyms, noise_job
from rayft.data.augment.paraphrase import ParaphraseBatch, ParaphraseJob, check_model_dir
from rayft.data.augment.rows import AUGMENTED, copy_offsets, op_labels, target_columns
from rayft.data.augment.template import template_rows

__all__ = ["AUGMENTED", "augment_train", "augmentation_counts", "check_augment"]


def check_augment(data: DataConfig, seed: int) -> None:
    """What the config cannot check alone, in the driver before any Ray work: synonym files are
    readable, paraphrase models are local model directories, every template row is valid."""
    labels = op_labels(data.augment)
    for index, spec in enumerate(data.augment):
        key = f"data.augment.{index}"
        if isinstance(spec, SynonymOp):
            load_synonyms(spec, f"{key}.synonyms")
        elif isinstance(spec, ParaphraseOp):
            check_model_dir(spec.model, f"{key}.model")
            if spec.back_model:
                check_model_dir(spec.back_model, f"{key}.back_model")
        elif isinstance(spec, TemplateOp):
            template_rows(spec, index, labels[index], data, seed)


def augment_train(train: ray.data.Dataset, data: DataConfig, seed: int) -> ray.data.Dataset:
    """The training rows, unchanged, plus the rows data.augment makes from them (lazy)."""
    labels, offsets = op_labels(data.augment), copy_offsets(data.augment)
    noise: list[NoiseJob] = []
    paraphrases: list[ParaphraseJob] = []
    templates: list[ray.data.Dataset] = []
    for index, spec in enumerate(data.augment):
        if isinstance(spec, TemplateOp):
            templates.append(ray.data.from_items(template_rows(spec, index, labels[index], data, seed)))
        elif isinstance(spec, ParaphraseOp):
            paraphrases.append(ParaphraseJob(index, labels[index], offsets[index], target_columns(spec.fields, data), spec))
        else:
            noise.append(noise_job(index, spec, labels[index], offsets[index], data))
    # Marks the originals even without noise ops, so every row has the `augmented` column.
    out = train.map_batches(NoiseBatch(noise, seed), batch_format="pandas")
    for job in paraphrases:
        spec = job.spec
        out = out.map_batches(
            ParaphraseBatch,
            fn_constructor_args=(job, seed),
            compute=ray.data.ActorPoolStrategy(size=spec.concurrency),
            batch_size=spec.batch_size,
            batch_format="pandas",
            num_cpus=spec.num_cpus,
            **({"num_gpus": spec.num_gpus} if spec.num_gpus else {}),
        )
    return out.union(*templates) if templates else out
