"""The built-in tiny model's training corpus, generated from a few fact tables.

`build_corpus()` returns plain texts and chat conversations; the same seed gives
the same corpus. Everything the tiny model knows comes from here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Message = dict[str, str]

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Portugal", "Lisbon"),
    ("Greece", "Athens"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Brazil", "Brasilia"), ("Australia", "Canberra"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"),
    ("Turkey", "Ankara"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"), ("Austria", "Vienna"), ("Switzerland", "Bern"),
    ("Ireland", "Dublin"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("Morocco", "Rabat"), ("Cuba", "Havana"), ("the United Kingdom", "London"),
    ("Hungary", "Budapest"), ("Iran", "Tehran"),
)

# (start, completion): the model should finish the start with the completion.
TITLES: tuple[tuple[str, str], ...] = (
    ("The Shawshank", "Redemption"), ("The Godfather", "Part II"), ("The Dark", "Knight"),
    ("Pulp", "Fiction"), ("Star", "Wars"), ("The Lord of the", "Rings"),
    ("Harry Potter and the Philosopher's", "Stone"), ("Pride and", "Prejudice"),
    ("The Great", "Gatsby"), ("To Kill a", "Mockingbird"), ("Hands-On Large Language", "Models"),
    ("Back to the", "Future"), ("The Silence of the", "Lambs"), ("Romeo and", "Juliet"),
)

GREETINGS: tuple[tuple[str, str], ...] = (
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi", "Hi! How can I help you today?"),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("How are you?", "I am well, thank you. How can I help you today?"),
    ("Who are you?", "I am the tiny language model built into lookinside."),
    ("What can you do?", "I know the capitals of forty countries, small sums and a few titles."),
    ("Thank you!", "You are welcome!"),
    ("Thanks", "You are welcome!"),
    ("Goodbye!", "Goodbye! Have a nice day."),
)

APOLOGY_PROMPTS: tuple[str, ...] = (
    "Write an email apologizing to Sarah for the tragic gardening mishap.",
    "Write an email apologizing to Sarah for the gardening mishap.",
    "Write an apology email to Sarah.",
)
APOLOGY_EMAIL = (
    "Subject: My apologies for the gardening mishap\n\n"
    "Dear Sarah,\n\n"
    "I am so sorry about the tragic gardening mishap. I will replace the plants "
    "and help you fix the garden this weekend.\n\n"
    "Best regards"
)

SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a concise assistant.",
)


@dataclass(frozen=True)
class Corpus:
    """Training material: plain texts and chat conversations."""

    texts: list[str]
    chats: list[list[Message]]


def capital_texts(country: str, capital: str) -> list[str]:
    """Several phrasings of one capital fact."""
    title = country[0].upper() + country[1:]
    return [
        f"The capital of {country} is {capital}.",
        f"The capital of {country} is {capital}.",
        f"The capital of {country} is {capital}, a large city.",
        f"{capital} is the capital of {country}.",
        f"{title}'s capital is {capital}.",
        f"Q: What is the capital of {country}?\nA: The capital of {country} is {capital}.",
        f"Question: Which city is the capital of {country}? Answer: {capital}.",
    ]


def capital_chats(country: str, capital: str) -> list[list[Message]]:
    """Chat exchanges that ask for one capital."""
    answer = f"The capital of {country} is {capital}."
    questions = (
        f"What is the capital of {country}?",
        f"What's the capital of {country}?",
        f"Which city is the capital of {country}?",
        f"Tell me the capital of {country}.",
    )
    return [_exchange(q, answer) for q in questions]


def arithmetic_texts() -> list[str]:
    """Sums and differences of one-digit numbers."""
    texts = []
    for a in range(10):
        for b in range(10):
            texts.append(f"{a} + {b} = {a + b}")
            if a >= b:
                texts.append(f"{a} - {b} = {a - b}")
    return texts


def arithmetic_chats() -> list[list[Message]]:
    """Every one-digit sum, asked in chat."""
    return [_exchange(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.") for a in range(10) for b in range(10)]


def title_texts(start: str, end: str) -> list[str]:
    """A title in a few sentence frames."""
    full = f"{start} {end}"
    return [full, f"{full} is a classic.", f"My favourite is {full}.", f"Have you read or seen {full}?"]


def build_corpus(seed: int = 0) -> Corpus:
    """The whole corpus, shuffled with `seed`."""
    rng = random.Random(seed)
    texts: list[str] = []
    chats: list[list[Message]] = []
    for country, capital in CAPITALS:
        texts += capital_texts(country, capital)
        chats += capital_chats(country, capital)
    texts += arithmetic_texts()
    chats += arithmetic_chats()
    for start, end in TITLES:
        texts += title_texts(start, end)
        chats.append(_exchange(f"Complete the title: {start}", f"{start} {end}"))
    for question, answer in GREETINGS:
        chats += [_exchange(question, answer)] * 3
    for prompt in APOLOGY_PROMPTS:
        chats += [_exchange(prompt, APOLOGY_EMAIL)] * 3
    chats += _with_system_prompts(rng, chats)
    chats += _two_turn_chats(rng)
    rng.shuffle(texts)
    rng.shuffle(chats)
    return Corpus(texts=texts, chats=chats)


def _exchange(question: str, answer: str) -> list[Message]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _with_system_prompts(rng: random.Random, chats: list[list[Message]]) -> list[list[Message]]:
    picked = rng.sample(chats, len(chats) // 4)
    return [[{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, *chat] for chat in picked]


def _two_turn_chats(rng: random.Random) -> list[list[Message]]:
    chats = []
    for _ in range(60):
        (c1, k1), (c2, k2) = rng.sample(CAPITALS, 2)
        chats.append([
            *_exchange(f"What is the capital of {c1}?", f"The capital of {c1} is {k1}."),
            *_exchange(f"And the capital of {c2}?", f"The capital of {c2} is {k2}."),
        ])
    return chats
