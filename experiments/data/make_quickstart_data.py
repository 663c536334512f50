"""Regenerate quickstart.jsonl: two small rule-following tasks a tiny model learns in minutes.

    python experiments/data/make_quickstart_data.py

Every row is distinct (numbers and words are drawn without replacement), so held-out rows
need the rule, not memory: parity of an unseen number, the first letter of an unseen word.
`rayft data report experiments/quickstart.yaml` shows 0 duplicates and 0 train overlap.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

LETTERS = "abcdefghij"


def numbers(rng: random.Random) -> Iterator[int]:
    yield from rng.sample(range(10_000), 10_000)


def words(rng: random.Random) -> Iterator[str]:
    seen: set[str] = set()
    while True:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
        if word not in seen:
            seen.add(word)
            yield word


def main(rows: int = 2000, seed: int = 0) -> None:
    rng = random.Random(seed)
    unseen_numbers, unseen_words = numbers(rng), words(rng)
    path = Path(__file__).with_name("quickstart.jsonl")
    with path.open("w") as handle:
        for _ in range(rows):
            if rng.random() < 0.5:
                number = next(unseen_numbers)
                row = {"instruction": "Is the number even or odd?", "input": str(number), "output": "odd" if number % 2 else "even"}
            else:
                word = next(unseen_words)
                row = {"instruction": "What is the first letter?", "input": word, "output": word[0]}
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
