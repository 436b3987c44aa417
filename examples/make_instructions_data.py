"""Write examples/data/instructions.jsonl: short instruction / answer pairs for the causal_lm example.

Templates only (capital cities, unit conversions, arithmetic), seeded, so the file is the
same on every machine. Each answer repeats the question's terms in one fixed sentence
shape, which a 135M model learns in a few dozen steps (perplexity drops visibly).
Run: python examples/make_instructions_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Peru": "Lima", "Chile": "Santiago", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara", "India": "New Delhi", "China": "Beijing",
    "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Ireland": "Dublin", "Austria": "Vienna",
    "Hungary": "Budapest", "Denmark": "Copenhagen", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Thailand": "Bangkok", "Vietnam": "Hanoi",
}
CAPITAL_PROMPTS = ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]
UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("hours", "minutes", 60),
         ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("days", "hours", 24)]
OPERATIONS = [("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b)]


def rows(rng: random.Random) -> list[dict]:
    out = []
    for country, city in CAPITALS.items():
        prompt = rng.choice(CAPITAL_PROMPTS).format(c=country)
        out.append({"prompt": prompt, "response": f"The capital of {country} is {city}."})
    for big, small, factor in UNITS:
        for amount in rng.sample(range(2, 40), 8):
            out.append({"prompt": f"Convert {amount} {big} to {small}.",
                        "response": f"{amount} {big} is {amount * factor} {small}."})
    for word, op in OPERATIONS:
        pairs = set()
        while len(pairs) < 24:
            pairs.add((rng.randint(2, 30), rng.randint(2, 20)))
        for a, b in sorted(pairs):
            out.append({"prompt": f"What is {a} {word} {b}?", "response": f"{a} {word} {b} is {op(a, b)}."})
    rng.shuffle(out)
    return out


def main() -> None:
    target = Path(__file__).resolve().parent / "data" / "instructions.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = rows(random.Random(7))
    target.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    print(f"wrote {len(data)} rows to {target}")


if __name__ == "__main__":
    main()
