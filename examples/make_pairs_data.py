"""Write examples/data/pairs.csv: sentence pairs scored 0-5 for similarity (an STS-style regression task).

The project's own sample data (no download): each sentence says who does what where;
the second sentence of a pair keeps or changes each part, and keeps the same meaning in
other words where it can. The score counts what the two sentences share (who 2, what 2,
where 1 point). Fixed seed, so the file is identical on every machine. Run it with
``python examples/make_pairs_data.py``; the CSV it writes is committed.
"""

import csv
import random
from pathlib import Path

# Each concept has two wordings, so a pair can mean the same thing in different words.
WHO = [("A man", "A guy"), ("A woman", "A lady"), ("A child", "A kid"), ("An old man", "An elderly man"),
       ("A dog", "A puppy"), ("Two girls", "A pair of girls"), ("A chef", "A cook"), ("A student", "A pupil")]
WHAT = [("is playing a guitar", "plays the guitar"), ("is riding a bike", "rides a bicycle"),
        ("is reading a book", "reads a novel"), ("is eating an apple", "eats an apple"),
        ("is running", "is jogging"), ("is cooking pasta", "makes spaghetti"),
        ("is painting a fence", "paints a fence"), ("is swimming", "swims"), ("is sleeping", "naps")]
WHERE = [("in the park", "at the park"), ("on the beach", "by the sea"), ("in the kitchen", "in a kitchen"),
         ("on the street", "in the road"), ("at home", "in the house"), ("in a garden", "in the yard")]
WEIGHTS = (2.0, 2.0, 1.0)  # who, what, where


def sentence(who: int, what: int, where: int, wording: int) -> str:
    return f"{WHO[who][wording]} {WHAT[what][wording]} {WHERE[where][wording]}."


def pairs(count: int, seed: int = 11) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        first = (rng.randrange(len(WHO)), rng.randrange(len(WHAT)), rng.randrange(len(WHERE)))
        keep = [rng.random() < 0.55 for _ in range(3)]
        second = tuple(part if kept else rng.choice([i for i in range(size) if i != part])
                       for part, kept, size in zip(first, keep, (len(WHO), len(WHAT), len(WHERE))))
        score = sum(w for w, a, b in zip(WEIGHTS, first, second) if a == b)
        left, right = sentence(*first, wording=0), sentence(*second, wording=rng.randrange(2))
        if (left, right) not in seen and left != right:
            seen.add((left, right))
            rows.append((left, right, round(float(score), 1)))
    return rows


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / "pairs.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(pairs(300))
    print(f"wrote {target}")
