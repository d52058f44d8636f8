"""Typed PROST_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prost.kit.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("PROST_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_defaults_are_the_documented_ones(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.data_dir == Path(".prost")
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert s.database_url is None
    assert s.broker_url is None
    assert s.jwt_secret is None
    assert s.jwt_ttl_seconds == 86400
    assert s.bcrypt_rounds == 12
    assert s.bcrypt_threads == 0
    assert (s.login_max_failures, s.login_window_seconds) == (10, 300)
    assert s.rate_limit_per_second == 100
    assert s.admin_email is None
    assert s.admin_password is None


def test_variables_are_read_with_the_prost_prefix_and_typed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROST_HTTP_PORT", "8123")
    clean_env.setenv("PROST_BCRYPT_ROUNDS", "4")
    clean_env.setenv("PROST_LOGIN_MAX_FAILURES", "3")
    clean_env.setenv("PROST_DATA_DIR", "/tmp/somewhere")
    clean_env.setenv("HTTP_PORT", "1")  # no prefix: not ours
    s = Settings()
    assert s.http_port == 8123
    assert s.bcrypt_rounds == 4
    assert s.login_max_failures == 3
    assert s.data_dir == Path("/tmp/somewhere")


def test_secrets_do_not_show_in_the_settings_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROST_JWT_SECRET", "s" * 40)
    clean_env.setenv("PROST_ADMIN_PASSWORD", "admin-password-1")
    s = Settings()
    assert "s" * 40 not in repr(s)
    assert "admin-password-1" not in repr(s)
    assert s.jwt_secret is not None
    assert s.jwt_secret.get_secret_value() == "s" * 40


@pytest.mark.parametrize(
    ("name", "value"), [("PROST_BCRYPT_ROUNDS", "3"), ("PROST_BCRYPT_ROUNDS", "32"), ("PROST_HTTP_PORT", "eighty")]
)
def test_a_bad_value_is_refused_at_start(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_each_service_has_a_url_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROST_CATALOG_URL", "http://10.0.0.5:9000")
    s = Settings()
    assert s.service_url("catalog") == "http://10.0.0.5:9000"
    assert s.service_url("users") is None
