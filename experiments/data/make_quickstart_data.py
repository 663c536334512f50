"""Regenerate quickstart.jsonl: two small rule-following tasks a tiny model learns in minutes.

    python experiments/data/make_quickstart_data.py

Held-out rows need the rule, not memory: parity of an unseen number, the first letter of an
unseen word.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

LETTERS = "abcdefghij"


def parity_row(rng: random.Random) -> dict[str, str]:
    number = rng.randint(0, 999)
    return {"instruction": "Is the number even or odd?", "input": str(number), "output": "even" if number % 2 == 0 else "odd"}


def first_letter_row(rng: random.Random) -> dict[str, str]:
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
    return {"instruction": "What is the first letter?", "input": word, "output": word[0]}


def main(rows: int = 2000, seed: int = 0) -> None:
    rng = random.Random(seed)
    path = Path(__file__).with_name("quickstart.jsonl")
    with path.open("w") as handle:
        for _ in range(rows):
            maker = parity_row if rng.random() < 0.5 else first_letter_row
            handle.write(json.dumps(maker(rng)) + "\n")


if __name__ == "__main__":
    main()
