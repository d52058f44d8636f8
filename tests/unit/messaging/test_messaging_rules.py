"""Rules both buses share: AMQP topic matching (RabbitMQ's rules) and retry delays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prost.kit.bus.base import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order.placed", "order.placed", True),
        ("order.placed", "order.cancelled", False),
        ("order.*", "order.placed", True),
        ("order.*", "order", False),
        ("order.*", "order.placed.late", False),
        ("*.placed", "order.placed", True),
        ("#", "order.placed", True),
        ("#", "order", True),
        ("order.#", "order", True),
        ("order.#", "order.a.b.c", True),
        ("order.#", "orders.placed", False),
        ("#.placed", "order.placed", True),
        ("#.placed", "placed", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("*.*", "a", False),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
    ],
)
def test_topic_pattern_matches_like_rabbitmq(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


words = st.sampled_from(["a", "b", "c"])


@given(
    pattern=st.lists(st.one_of(words, st.just("*"), st.just("#")), min_size=1, max_size=4),
    key=st.lists(words, min_size=1, max_size=5),
)
def test_topic_matching_agrees_with_a_brute_force_reading(pattern: list[str], key: list[str]) -> None:
    assert topic_matches(".".join(pattern), ".".join(key)) is brute_force(pattern, key)


def brute_force(pattern: list[str], key: list[str]) -> bool:
    """Try every way of giving each `#` some number of words."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(brute_force(rest, key[n:]) for n in range(len(key) + 1))
    return bool(key) and head in ("*", key[0]) and brute_force(rest, key[1:])


def test_retry_delays_double_per_attempt_up_to_a_cap() -> None:
    from prost.kit.bus.base import MAX_RETRY_DELAY_MS, retry_delay_ms

    assert [retry_delay_ms(n, 200) for n in (1, 2, 3, 4)] == [200, 400, 800, 1600]
    assert retry_delay_ms(40, 200) == MAX_RETRY_DELAY_MS
