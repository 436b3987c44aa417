"""Write examples/data/reviews.csv: short product reviews labelled positive / negative.

The project's own sample data (no download): sentences composed from hand-written
phrases with a fixed seed, so the file is identical on every machine. Run it with
``python examples/make_demo_data.py``; the CSV it writes is committed.
"""

import csv
import random
from pathlib import Path

PRODUCTS = ["headphones", "blender", "backpack", "phone case", "desk lamp", "kettle", "keyboard", "tent",
            "running shoes", "coffee grinder", "monitor", "vacuum", "rain jacket", "water bottle", "router",
            "office chair", "camera bag", "toaster", "bike light", "yoga mat"]
POSITIVE = ["works perfectly", "is worth every penny", "exceeded my expectations", "feels really solid",
            "arrived quickly and works great", "is the best purchase I made this year", "does exactly what it promises",
            "is comfortable to use all day", "was easy to set up", "still works flawlessly after months",
            "looks beautiful on my desk", "is quiet and efficient", "has excellent build quality",
            "made my mornings so much easier", "is a fantastic value", "performs better than pricier brands"]
NEGATIVE = ["broke after two days", "is a waste of money", "stopped working within a week",
            "feels cheap and flimsy", "arrived damaged and scratched", "is the worst purchase I made this year",
            "does not do what it promises", "hurts after ten minutes of use", "was impossible to set up",
            "died right after the warranty ended", "looks nothing like the photos", "is loud and overheats",
            "has terrible build quality", "made everything more frustrating", "is badly overpriced",
            "performs worse than the cheapest brands"]
OPENERS = ["The {p} {v}.", "This {p} {v}.", "My new {p} {v}.", "Honestly, the {p} {v}.", "I think this {p} {v}.",
           "After a month, the {p} {v}.", "The {p} I ordered {v}."]
CLOSERS = {"positive": ["", " Highly recommended.", " Would buy again.", " Five stars.", " Love it."],
           "negative": ["", " Avoid it.", " Returning it.", " One star.", " Very disappointed."]}


def reviews(count: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        verb = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        text = rng.choice(OPENERS).format(p=rng.choice(PRODUCTS), v=verb) + rng.choice(CLOSERS[label])
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / "reviews.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(reviews(400))
    print(f"wrote {target}")
