"""Rows added and discarded per augmentation op, counted in one pass over the augmented data.

Which source rows an op augments is a seeded draw per row, so the copies each op attempted can
be recomputed from the original rows alone: attempted - added = discarded (copies equal to their
source: nothing changed, an empty generation). The rows stream to the driver and no model runs
again: count on the materialized output of augment_train.
"""

from __future__ import annotations

from collections import Counter

import ray.data

from rayft.augment_config import TemplateOp
from rayft.config import DataConfig
from rayft.data.augment.rows import AUGMENTED, chosen, op_labels


def augmentation_counts(dataset: ray.data.Dataset, data: DataConfig, seed: int) -> dict[str, dict[str, int]]:
    """{"original": {"added": original rows, "discarded": 0}, then per op label
    {"added": rows it made, "discarded": copies dropped because they equalled their source}}."""
    labels = op_labels(data.augment)
    sources = [(i, labels[i], spec.p, spec.copies) for i, spec in enumerate(data.augment) if not isinstance(spec, TemplateOp)]
    added: Counter[str] = Counter()
    attempted: Counter[str] = Counter({label: spec.rows for label, spec in zip(labels, data.augment) if isinstance(spec, TemplateOp)})
    # No select_columns: on a materialized dataset, plain iteration reads the blocks without starting tasks.
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=4096):
        marks = batch.column(AUGMENTED).to_pylist()
        added.update(marks)
        for mark, file_index, line in zip(marks, batch.column("file_index").to_pylist(), batch.column("line").to_pylist()):
            for index, label, p, copies in sources if mark == "" else ():
                if chosen(seed, index, file_index, line, p):
                    attempted[label] += copies
    counts = {"original": {"added": added[""], "discarded": 0}}
    for label in labels:
        counts[label] = {"added": added[label], "discarded": attempted[label] - added[label]}
    return counts
