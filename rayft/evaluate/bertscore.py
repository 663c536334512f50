"""BERTScore (Zhang et al., 2020) with a local encoder: greedy cosine matching of token embeddings.

Written here rather than taken from the `bert-score` package: its last release (0.3.13) does not
run on transformers 5 (it calls tokenizer methods transformers 5 removed, and maps unknown local
model paths to a T5 model). The computation is small: embed both sides with the encoder, match
every token with its most similar token on the other side, average.

Precision = mean over candidate tokens of the best cosine with a reference token; recall = mean
over reference tokens of the best cosine with a candidate token; F1 their harmonic mean. Special
tokens ([CLS], [SEP]) are left out, no idf weighting and no baseline rescaling (the package's
defaults). With several references, the one with the highest F1 counts. An empty side scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from rayft.config import BertScoreConfig, UserInputError


class BertScorer:
    """Loads the encoder once; `score` returns mean precision, recall and F1 over examples."""

    def __init__(self, config: BertScoreConfig, device: torch.device | None = None) -> None:
        path = Path(config.model).expanduser()
        if not (path / "config.json").is_file():
            raise UserInputError(f"eval.bertscore.model: {str(path)!r} is not a local model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.layer = config.layer
        self.batch_size = config.batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """L2-normalised embeddings of each text's tokens (specials left out): one (tokens, dim) tensor per text."""
        embedded: list[torch.Tensor] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt", return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            outputs = self.model(**batch.to(self.device), output_hidden_states=self.layer is not None)
            hidden = outputs.last_hidden_state if self.layer is None else outputs.hidden_states[self.layer]
            keep = batch["attention_mask"].bool() & ~special.to(self.device)
            for row in range(len(chunk)):
                embedded.append(F.normalize(hidden[row][keep[row]].float(), dim=-1).cpu())
        return embedded

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        flat_refs = [ref for refs in references for ref in refs]
        candidates = self.embed(predictions)
        reference_embeddings = iter(self.embed(flat_refs))
        totals = torch.zeros(3, dtype=torch.float64)
        for candidate, refs in zip(candidates, references, strict=True):
            options = [pair_score(candidate, next(reference_embeddings)) for _ in refs]
            totals += torch.tensor(max(options, key=lambda prf: prf[2]), dtype=torch.float64)
        means = (totals / max(len(predictions), 1)).tolist()
        return {"bertscore_precision": means[0], "bertscore_recall": means[1], "bertscore_f1": means[2]}


def pair_score(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[float, float, float]:
    """Greedy matching of two normalised token-embedding matrices: (precision, recall, F1)."""
    if candidate.numel() == 0 or reference.numel() == 0:
        return 0.0, 0.0, 0.0
    similarity = candidate @ reference.T
    precision = similarity.max(dim=1).values.mean().item()
    recall = similarity.max(dim=0).values.mean().item()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1
