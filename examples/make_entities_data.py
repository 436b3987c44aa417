"""Write examples/data/entities.jsonl (and entities.conll): short sentences with PER / LOC / ORG entities.

The project's own sample data for token classification (no download): English-like
sentences built from hand-written templates and name lists with a fixed seed, so the
files are identical on every machine. Each JSONL line is ``{"tokens": [...], "tags": [...]}``
with strict BIO tags (``B-PER``, ``I-PER``, ``B-LOC``, ...). Entities span one to three
tokens, sit at the start, middle and end of sentences, and about one sentence in nine has
none. Every name list has 30 entries, so a split by rows still sees names in new contexts
and new combinations; capitalised words that are not entities (``Monday``, ``Yesterday``,
``The``) keep "capitalised" from being enough.

``entities.conll`` holds the first 60 sentences as ``token<TAB>tag`` lines with a blank
line between sentences, an example for the CoNLL reader.
Run: python examples/make_entities_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FIRST_NAMES = ["Alice", "Bruno", "Chen", "Dmitri", "Elena", "Fatima", "George", "Hana", "Ibrahim", "Julia",
               "Kofi", "Laura", "Miguel", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tomoko",
               "Umar", "Valentina", "Walter", "Ximena", "Yusuf", "Zoe", "Anders", "Beatriz", "Carlos", "Ingrid"]
LAST_NAMES = ["Smith", "Okafor", "Nakamura", "Petrov", "Garcia", "Haddad", "Muller", "Kowalski", "Rossi", "Dubois",
              "Mensah", "Lindqvist", "Fernandes", "Novak", "Ahmed", "Kim", "Oconnor", "Silva", "Jensen", "Moreau",
              "Brown", "Tanaka", "Weber", "Costa", "Ivanova", "Patel", "Yilmaz", "Larsen", "Hughes", "Sato"]
LOCATIONS = ["Paris", "New York", "Rio de Janeiro", "Nairobi", "Buenos Aires", "Oslo", "Cape Town", "Tokyo",
             "San Francisco", "Lisbon", "Hong Kong", "Cairo", "Mexico City", "Berlin", "Kuala Lumpur", "Dublin",
             "Seoul", "Lake Geneva", "Mumbai", "Vancouver", "Tel Aviv", "Krakow", "Sao Paulo", "Helsinki",
             "Marrakesh", "Los Angeles", "Edinburgh", "Hanoi", "Santiago", "Abu Dhabi"]
ORGANISATIONS = ["Acme Corp", "Globex", "Initech", "Northwind Traders", "Bank of Ireland", "Red Cross",
                 "United Nations", "Blue River Labs", "Umbrella Group", "Stark Industries", "Wayne Enterprises",
                 "Hooli", "Vandelay Industries", "Cyberdyne Systems", "Soylent Foods", "Tyrell Corporation",
                 "Oceanic Airlines", "Pied Piper", "Massive Dynamic", "Aperture Science", "Gringotts Bank",
                 "Dunder Mifflin", "Monarch Energy", "Sirius Cybernetics", "Wonka Industries", "Oscorp",
                 "Green Valley Cooperative", "Helix Pharma", "Orbital Freight", "Kestrel Media"]

# {PER}, {LOC}, {ORG} are slots; every other word is one token tagged O (punctuation is its own token).
TEMPLATES = [
    "{PER} flew to {LOC} to meet {ORG} .",
    "{ORG} opened a new office in {LOC} .",
    "Yesterday {PER} joined {ORG} as a senior engineer .",
    "In {LOC} , {PER} gave a talk about climate policy .",
    "{PER} and {PER} moved from {LOC} to {LOC} last year .",
    "The board of {ORG} appointed {PER} as chief executive .",
    "According to {PER} , {ORG} will hire two hundred people .",
    "Shares of {ORG} fell sharply on Monday .",
    "{LOC} is famous for its old harbour and busy markets .",
    "We spent the summer in {LOC} with {PER} .",
    "{PER} works for {ORG} in {LOC} .",
    "A spokesperson for {ORG} declined to comment on Friday .",
    "Tourists crowd the streets of {LOC} every August .",
    "{PER} said the deal with {ORG} was signed in {LOC} .",
    "Last week {PER} visited {LOC} for the first time .",
    "My sister lives near {LOC} and works at {ORG} .",
    "{ORG} and {ORG} announced a merger on Tuesday .",
    "The concert in {LOC} was cancelled because of rain .",
    "Ask {PER} about the budget before the meeting .",
    "Researchers at {ORG} published a study on sleep .",
    "The train from {LOC} to {LOC} was two hours late .",
    "Thanks to {PER} , the project finished early .",
    "After the election , {PER} returned to {LOC} .",
    "{ORG} reported record profits this quarter .",
]
# Sentences without entities: subject + predicate + time, capitalised days and months included.
PLAIN_SUBJECTS = ["The weather", "My neighbour", "The old bridge", "Our team", "The kitchen", "Her brother",
                  "The morning bus", "The museum", "Nobody in the office", "The garden"]
PLAIN_PREDICATES = ["was quiet", "was late again", "needed repairs", "felt much better", "stayed closed",
                    "looked busy", "was cold and rainy", "got a fresh coat of paint"]
PLAIN_TIMES = ["on Monday", "all week", "this morning", "last Saturday", "in August", "after dinner",
               "before lunch", "on Thursday afternoon"]
PLAIN_EVERY = 9  # one sentence in nine has no entity


def person(rng: random.Random) -> list[str]:
    """A full name most of the time, sometimes a first name or a first name with a middle initial."""
    roll = rng.random()
    if roll < 0.15:
        return [rng.choice(FIRST_NAMES)]
    if roll < 0.25:
        return [rng.choice(FIRST_NAMES), rng.choice("ABCDEFGHJKLMNPRSTW") + ".", rng.choice(LAST_NAMES)]
    return [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]


def entity(kind: str, rng: random.Random) -> list[str]:
    if kind == "PER":
        return person(rng)
    return rng.choice(LOCATIONS if kind == "LOC" else ORGANISATIONS).split()


def fill(template: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """Tokens and BIO tags of one template with its slots filled."""
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if word in ("{PER}", "{LOC}", "{ORG}"):
            kind = word[1:-1]
            words = entity(kind, rng)
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def plain(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence without entities."""
    text = f"{rng.choice(PLAIN_SUBJECTS)} {rng.choice(PLAIN_PREDICATES)} {rng.choice(PLAIN_TIMES)} ."
    return text.split(), ["O"] * len(text.split())


def sentences(count: int, seed: int = 7) -> list[dict]:
    """``count`` distinct sentences as ``{"tokens": [...], "tags": [...]}``, in a seeded random order."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        index = len(rows)
        tokens, tags = plain(rng) if index % PLAIN_EVERY == 0 else fill(TEMPLATES[index % len(TEMPLATES)], rng)
        key = " ".join(tokens)
        if key not in seen:
            seen.add(key)
            rows.append({"tokens": tokens, "tags": tags})
    rng.shuffle(rows)
    return rows


def write(folder: Path, count: int = 400, conll_count: int = 60) -> list[dict]:
    """Write ``entities.jsonl`` and ``entities.conll`` into ``folder``; return the rows."""
    rows = sentences(count)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entities.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    blocks = ["".join(f"{token}\t{tag}\n" for token, tag in zip(row["tokens"], row["tags"]))
              for row in rows[:conll_count]]
    (folder / "entities.conll").write_text("\n".join(blocks), encoding="utf-8")
    return rows


def main() -> None:
    folder = Path(__file__).resolve().parent / "data"
    rows = write(folder)
    print(f"wrote {len(rows)} sentences to {folder / 'entities.jsonl'} and the first 60 to {folder / 'entities.conll'}")


if __name__ == "__main__":
    main()
