"""kit.idempotency's pure parts: which keys are accepted, and body fingerprints."""

from __future__ import annotations

import pytest

from prost.kit.errors import ValidationFailed
from prost.kit.idempotency import canonical_json, fingerprint, parse_key


def test_an_absent_key_is_none_and_a_good_key_is_kept_as_sent() -> None:
    assert parse_key(None) is None
    assert parse_key("order-2026-11-25 #1") == "order-2026-11-25 #1"
    assert parse_key("k" * 255) == "k" * 255


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "a\x00b", "line\nbreak", "tab\tkey", "del\x7f"])
def test_empty_long_or_control_character_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_key(key)


def test_equal_json_bodies_have_equal_fingerprints_whatever_their_layout() -> None:
    one = b'{"items": [{"product_id": "a", "quantity": 1}], "payment": {"cvc": "123"}}'
    two = b'{"payment":{"cvc":"123"},"items":[{"quantity":1,"product_id":"a"}]}'
    assert canonical_json(one) == canonical_json(two)
    assert fingerprint(one, secret="s") == fingerprint(two, secret="s")


def test_another_body_or_another_secret_gives_another_fingerprint() -> None:
    body = {"items": [{"product_id": "a", "quantity": 1}]}
    other = {"items": [{"product_id": "a", "quantity": 2}]}
    assert fingerprint(body, secret="s") != fingerprint(other, secret="s")
    assert fingerprint(body, secret="s") != fingerprint(body, secret="t")
    assert len(fingerprint(body, secret="s")) == 64


def test_a_fingerprint_does_not_reveal_a_card_number_without_the_secret() -> None:
    import hashlib

    body = {"payment": {"card_number": "4242424242424242"}}
    plain = hashlib.sha256(canonical_json(body)).hexdigest()
    assert fingerprint(body, secret="server-secret") != plain
