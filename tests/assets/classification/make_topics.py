"""Generate topics_train.jsonl and topics_val.jsonl: short news-like sentences labelled
sport / food / weather (50/30/20 %, so always answering "sport" scores 0.5).

Each sentence is a neutral opener, one topic phrase and a neutral closer, so only the topic phrase
tells the label; no sentence repeats. Validation sentences use topic phrases that no training
sentence contains: a classifier has to generalise, not remember. Run from the repository root:
    python tests/assets/classification/make_topics.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PHRASES = {
    "sport": [
        "the striker scored twice in the second half", "the team won the championship final", "the goalkeeper saved a penalty",
        "the runner broke the national record", "the coach praised his defenders", "the match went to extra time",
        "the tennis player reached the semifinal", "fans cheered as the cyclist crossed the line", "the referee showed a red card",
        "the swimmer took gold in the relay", "the club signed a new midfielder", "the boxer won on points",
    ],
    "food": [
        "the chef baked fresh bread with rosemary", "the soup was seasoned with garlic and pepper", "the bakery sold out of croissants",
        "the restaurant added a vegetarian curry", "the recipe needs two cups of flour", "the market had ripe tomatoes and peaches",
        "the cheese was aged for a year", "the waiter served grilled salmon", "the cake was topped with chocolate cream",
        "the noodles were cooked in a spicy broth", "the farmer sold honey and apples", "the pizza came out of a wood oven",
    ],
    "weather": [
        "heavy rain flooded the streets", "a cold front will bring snow tonight", "the forecast promises sunshine and warm winds",
        "thunderstorms are expected in the afternoon", "fog delayed the morning flights", "temperatures dropped below freezing",
        "a heatwave pushed temperatures to forty degrees", "strong gusts knocked down branches", "the drought left the rivers low",
        "hail damaged cars across the valley", "clouds cleared by the evening", "a hurricane is moving toward the coast",
    ],
}
OPENERS = ["Yesterday", "On Monday", "According to reports", "This morning", "Late on Friday", "Earlier this week", "In the city", "Once again"]
CLOSERS = ["", "as expected", "said officials", "to everyone's surprise", "for the first time", "once more"]
SHARES = {"sport": 0.5, "food": 0.3, "weather": 0.2}
HELD_OUT = 3  # the last phrases of each topic appear in validation only


def rows(count: int, held_out: bool, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for label, share in SHARES.items():
        phrases = PHRASES[label][-HELD_OUT:] if held_out else PHRASES[label][:-HELD_OUT]
        combos = [(o, p, c) for o in OPENERS for p in phrases for c in CLOSERS]
        for opener, phrase, closer in rng.sample(combos, round(count * share)):
            out.append({"text": f"{opener} {phrase} {closer}".strip() + ".", "label": label})
    rng.shuffle(out)
    return out


if __name__ == "__main__":
    here = Path(__file__).parent
    for name, count, held_out in [("topics_train.jsonl", 240, False), ("topics_val.jsonl", 60, True)]:
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows(count, held_out, seed=0)))
        print(f"wrote {here / name}")
