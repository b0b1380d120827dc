"""The seed catalog: a handful of books for the embedded default and the tests."""
from __future__ import annotations

from domain.model import Book

SEED_BOOKS: tuple[Book, ...] = (
    Book(1, "The Pragmatic Programmer", 4299),
    Book(2, "Designing Data-Intensive Applications", 5499),
    Book(3, "Structure and Interpretation of Computer Programs", 3850),
    Book(4, "The Mythical Man-Month", 2995),
    Book(5, "Release It!", 4150),
    Book(6, "Enterprise Integration Patterns", 6200),
)
