"""The users service's rules, without a database."""

from __future__ import annotations

import uuid

import pytest

from prost.kit.auth import Principal
from prost.users import domain


def principal(role: str = "customer", *, user_id: uuid.UUID | None = None, version: int = 0) -> Principal:
    return Principal(id=user_id or uuid.uuid4(), email="p@prost.test", username="p_user", role=role, version=version)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Ada@Example.COM", "Ada@example.com"),
        ("  ada@example.com ", "ada@example.com"),
        ("ada+shop@prost.test", "ada+shop@prost.test"),
        ("ünï@müller.de", "ünï@müller.de"),
    ],
)
def test_a_valid_email_is_kept_in_its_normalised_form(raw: str, stored: str) -> None:
    assert domain.normalize_email(raw) == stored


@pytest.mark.parametrize(
    "raw", ["", "ada", "ada@", "@example.com", "ada@@example.com", "ada@localhost", "a b@example.com"]
)
def test_a_malformed_email_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="email"):
        domain.normalize_email(raw)


def test_an_email_over_320_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="320"):
        domain.normalize_email("a" * 64 + "@" + "b" * 300 + ".com")


def test_a_login_email_that_is_not_valid_is_looked_up_as_typed() -> None:
    assert domain.lookup_email(" not-an-email ") == "not-an-email"
    assert domain.lookup_email("Ada@EXAMPLE.com") == "Ada@example.com"


@pytest.mark.parametrize("name", ["ada", "a.b-c_d", "A" * 32, "007"])
def test_usernames_of_3_to_32_letters_digits_and_punctuation_are_accepted(name: str) -> None:
    assert domain.check_username(name) == name


@pytest.mark.parametrize("name", ["ab", "A" * 33, "ada lovelace", "ada!", "adä", "", "ada\n"])
def test_other_usernames_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="username"):
        domain.check_username(name)


def test_a_password_needs_eight_characters() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        domain.check_new_password("seven77")
    assert domain.check_new_password("eight888") == "eight888"


def test_a_password_of_72_bytes_is_accepted_and_73_bytes_refused_never_cut() -> None:
    assert domain.check_new_password("x" * 72) == "x" * 72
    with pytest.raises(ValueError, match="72 bytes"):
        domain.check_new_password("x" * 73)


def test_password_length_is_counted_in_utf8_bytes() -> None:
    # 36 two-byte characters are 72 bytes; one more character is 74.
    assert domain.check_new_password("é" * 36) == "é" * 36
    with pytest.raises(ValueError, match="72 bytes"):
        domain.check_new_password("é" * 37)
    assert not domain.fits_bcrypt("€" * 25)


def test_a_user_reads_their_own_profile_and_an_admin_reads_any() -> None:
    me = principal()
    domain.check_can_read(me, me.id)
    domain.check_can_read(principal("admin"), uuid.uuid4())
    with pytest.raises(domain.NotYourProfile):
        domain.check_can_read(me, uuid.uuid4())


def test_nobody_changes_another_profile_not_even_an_admin() -> None:
    me = principal()
    domain.check_can_change(me, me.id)
    with pytest.raises(domain.NotYourProfile):
        domain.check_can_change(principal("admin"), me.id)


def test_a_token_older_than_the_last_credentials_change_is_refused() -> None:
    domain.check_token_current(principal(version=2), 2)
    with pytest.raises(domain.TokenOutdated):
        domain.check_token_current(principal(version=1), 2)


def test_a_change_drops_fields_that_change_nothing() -> None:
    plan = domain.plan_change(
        current_email="a@x.com", current_username="ada", username="ada", email="a@x.com", password=None
    )
    assert plan.is_empty
    assert not plan.touches_credentials


def test_a_new_email_or_password_touches_the_credentials_but_a_username_does_not() -> None:
    kw = {"current_email": "a@x.com", "current_username": "ada"}
    assert not domain.plan_change(**kw, username="ada2", email=None, password=None).touches_credentials
    assert domain.plan_change(**kw, username=None, email="b@x.com", password=None).touches_credentials
    assert domain.plan_change(**kw, username=None, email="A@x.com", password=None).touches_credentials
    assert domain.plan_change(**kw, username=None, email=None, password="new-pass-1").touches_credentials


def test_the_address_limit_is_ten_times_the_account_limit() -> None:
    limits = domain.LoginLimits(max_failures=3, window_seconds=60)
    assert limits.limit_for("account") == 3
    assert limits.limit_for("address") == 30


@pytest.mark.parametrize(
    ("email", "base"), [("ops.team@x.com", "ops.team"), ("a@x.com", "admina"), ("we+ird!@x.com", "weird")]
)
def test_an_admin_username_comes_from_the_email(email: str, base: str) -> None:
    assert domain.admin_username_base(email) == base
    domain.check_username(domain.admin_username_base(email))
