"""Write examples/data/topics.csv: short news-style headlines in four topics, deliberately imbalanced.

The project's own sample data (no download): headlines composed from hand-written
phrases with a fixed seed. Topics and row counts: sports 140, technology 90, food 45,
travel 25 (300 rows), so a model that ignores the rare topics still scores well on
accuracy but not on macro-F1. Run it with ``python examples/make_topics_data.py``; the CSV
it writes is committed.
"""

import csv
import random
from pathlib import Path

COUNTS = {"sports": 140, "technology": 90, "food": 45, "travel": 25}
SUBJECTS = {
    "sports": ["The home team", "The striker", "Our goalkeeper", "The tennis champion", "The marathon runner",
               "The coach", "The rookie pitcher", "The national squad", "The cycling team", "The captain"],
    "technology": ["The new smartphone", "The chip maker", "A startup", "The software update", "The laptop",
                   "The search engine", "A robot vacuum", "The cloud provider", "The app", "The graphics card"],
    "food": ["The bakery", "A new ramen shop", "The chef", "This soup recipe", "The pizza place",
             "The farmers market", "A vegan cafe", "The chocolate maker", "The food truck", "The sushi bar"],
    "travel": ["The airline", "A small island resort", "The night train", "The mountain hostel",
               "The cruise ship", "The old town", "A budget hotel", "The airport", "The ferry", "The ski lodge"],
}
PREDICATES = {
    "sports": ["wins the final in extra time", "scores twice in the derby", "breaks the season record",
               "signs a three-year contract", "is out injured for the playoffs", "takes the league title",
               "loses on penalties", "trains ahead of the championship match"],
    "technology": ["ships a faster processor", "releases a major security patch", "launches a foldable screen",
                   "adds an AI assistant to its software", "cuts battery drain by half", "opens its code to developers",
                   "recalls units over a firmware bug", "doubles storage at the same price"],
    "food": ["bakes the best sourdough in town", "adds a spicy noodle dish to the menu", "wins a prize for its dessert",
             "shares a recipe for slow-cooked stew", "opens a second kitchen downtown", "serves a seasonal tasting menu",
             "sources its vegetables from local farms", "brings back its famous dumplings"],
    "travel": ["adds direct flights to the coast", "offers cheap weekend getaways", "reopens after renovation",
               "tops the list of scenic routes", "introduces sleeper cabins for long journeys",
               "welcomes record numbers of tourists", "extends its summer timetable", "launches island-hopping tours"],
}
SUFFIXES = ["", " this week", " on Sunday", ", reports say", " again", " after months of waiting"]


def headlines(seed: int = 5) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for topic, count in COUNTS.items():
        made = 0
        while made < count:
            text = f"{rng.choice(SUBJECTS[topic])} {rng.choice(PREDICATES[topic])}{rng.choice(SUFFIXES)}."
            if text not in seen:
                seen.add(text)
                rows.append((text, topic))
                made += 1
    rng.shuffle(rows)
    return rows


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / "topics.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topic"])
        writer.writerows(headlines())
    print(f"wrote {target}")
