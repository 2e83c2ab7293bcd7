"""``ConfigError`` and the value checks shared by config dataclasses.

Every check names the full key (``config.data.seq_len``), the expected value
and the given one.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key is unknown, of the wrong type or has an impossible value."""


def fail(key: str, expected: str, given) -> None:
    key = key if key.startswith("config.") else f"config.{key}"
    raise ConfigError(f"{key}: expected {expected}, got {given!r}")


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        fail(key, f"one of {list(choices)}", value)


def check_positive(key: str, value) -> None:
    if value <= 0:
        fail(key, "a positive number", value)


def check_at_least(key: str, value, minimum) -> None:
    if value < minimum:
        fail(key, f"at least {minimum}", value)


def check_non_negative(key: str, value) -> None:
    if value < 0:
        fail(key, "a non-negative number", value)


def check_rate(key: str, value) -> None:
    if not 0.0 <= value < 1.0:
        fail(key, "a rate in [0, 1)", value)
