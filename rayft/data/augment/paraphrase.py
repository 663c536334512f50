"""Paraphrase (and back-translation) with a user's local seq2seq or causal model in a Ray actor pool.

Each actor loads the model once; decoding is greedy or beam search (no sampling), so the output
depends only on the input text. Copy k of a row is the k-th best beam. A generation that is
empty or whitespace leaves its field as it was; a copy that changes nothing is not emitted
(augmentation_counts reports it as discarded), so no invalid or repeated row comes out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rayft.augment_config import ParaphraseOp
from rayft.config import ConfigError
from rayft.data.augment.rows import AUGMENTED, TextKey, chosen, copy_row, field_texts, marked, with_copies, with_texts

Generator = tuple[PreTrainedModel, PreTrainedTokenizerBase]


@dataclass(frozen=True)
class ParaphraseJob:
    index: int
    label: str
    offset: int
    columns: list[str]
    spec: ParaphraseOp


def check_model_dir(path: str, key: str) -> None:
    """Fail in the driver, naming the key, when a model directory cannot be what the actors load."""
    if not (Path(path).expanduser() / "config.json").is_file():
        raise ConfigError(f"{key}: {path!r} is not a local model directory (no config.json)")


def load_generator(path: str) -> Generator:
    """A seq2seq or causal LM (chosen by its config) in eval mode, and a tokenizer that can pad it."""
    path = str(Path(path).expanduser())
    config = AutoConfig.from_pretrained(path)
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not config.is_encoder_decoder:
        tokenizer.padding_side = "left"  # a causal model continues the prompt: pad before it
    return model, tokenizer


def generate(generator: Generator, prompts: list[str], max_new_tokens: int, num_beams: int, num_return: int) -> list[list[str]]:
    """The `num_return` best decodings (stripped) of each prompt; a causal model's prompt is cut off."""
    if not prompts:
        return []
    model, tokenizer = generator
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            num_return_sequences=num_return,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    if not model.config.is_encoder_decoder:
        output = output[:, encoded["input_ids"].shape[1] :]
    texts = [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
    return [texts[i * num_return : (i + 1) * num_return] for i in range(len(prompts))]


class ParaphraseBatch:
    """Ray Data actor: rows pass through; the chosen original rows' texts are rewritten and the
    copies that differ from their source are appended."""

    def __init__(self, job: ParaphraseJob, seed: int) -> None:
        torch.set_num_threads(max(1, int(job.spec.num_cpus)))
        self.job = job
        self.seed = seed
        self.forward = load_generator(job.spec.model)
        self.back = load_generator(job.spec.back_model) if job.spec.back_model else None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        job = self.job
        sources = [
            source for source in marked(batch).to_dict("records")
            if source[AUGMENTED] == "" and chosen(self.seed, job.index, int(source["file_index"]), int(source["line"]), job.spec.p)
        ]
        records = [json.loads(source["record"]) for source in sources]
        places = [(row, key, text) for row, record in enumerate(records) for key, text in field_texts(record, job.columns)]
        rewritten: list[dict[TextKey, list[str]]] = [{} for _ in sources]
        for (row, key, _), outputs in zip(places, self.rewrite([text for _, _, text in places])):
            rewritten[row][key] = outputs
        copies = []
        for source, record, outputs in zip(sources, records, rewritten):
            for number in range(1, job.spec.copies + 1):
                changed = with_texts(record, {key: texts[number - 1] for key, texts in outputs.items() if texts[number - 1]})
                if changed != record:
                    copies.append(copy_row(source, changed, job.offset + number, job.label))
        return with_copies(batch, copies)

    def rewrite(self, texts: list[str]) -> list[list[str]]:
        """`copies` rewrites per text; with back_model, there (best beam) and back (`copies` beams)."""
        spec = self.job.spec
        prompts = [spec.prompt.format(text=text) for text in texts]
        if self.back is None:
            return generate(self.forward, prompts, spec.max_new_tokens, spec.num_beams, spec.copies)
        there = [best for best, in generate(self.forward, prompts, spec.max_new_tokens, spec.num_beams, 1)]
        back = generate(self.back, [spec.back_prompt.format(text=text) for text in there], spec.max_new_tokens, spec.num_beams, spec.copies)
        # Nothing came out on the way there: there is nothing to translate back.
        return [outputs if middle else [""] * spec.copies for middle, outputs in zip(there, back)]
