"""Typed settings: every variable is `PROST_<NAME>`; the README has the table."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("users", "catalog", "cart", "orders", "payments")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROST_", extra="ignore")

    # where and how to run
    data_dir: Path = Path(".prost")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    database_url: str | None = None
    # connections per process: pool size + overflow (embedded: one pool for every service)
    db_pool_size: int = 10
    db_max_overflow: int = 0
    broker_url: str | None = None
    rabbitmq_quorum: bool = False
    rabbitmq_prefetch: int = 64
    # per-service ports in distributed mode (0 = pick a free loopback port)
    users_port: int = 0
    catalog_port: int = 0
    cart_port: int = 0
    orders_port: int = 0
    payments_port: int = 0
    # where services find each other (set by the distributed runner or by hand)
    users_url: str | None = None
    catalog_url: str | None = None
    cart_url: str | None = None
    orders_url: str | None = None
    payments_url: str | None = None

    # auth
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: int = 24 * 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    # threads hashing passwords (at the lowest CPU priority); 0 = one per core
    bcrypt_threads: int = Field(default=0, ge=0, le=64)
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    login_max_failures: int = 10
    login_window_seconds: int = 300
    rate_limit_per_second: float = 100.0
    cors_origins: str = ""

    # messaging
    max_delivery_attempts: int = 5
    retry_base_delay_ms: int = 200
    outbox_retention_hours: int = 24
    outbox_poll_seconds: float = 2.0
    outbox_batch_size: int = 200
    outbox_relays: int = Field(default=1, ge=1)  # relays per schema and process

    # inventory and the saga
    reservation_ttl_seconds: int = 120
    cart_hold_ttl_seconds: int = 3600
    sweep_interval_seconds: float = 1.0
    saga_step_timeout_seconds: float = Field(default=30.0, gt=0)
    # the payment step's own, shorter deadline (never longer than the step timeout): with
    # the defaults an order whose provider never answers is final within 5 seconds
    saga_payment_timeout_seconds: float = Field(default=3.0, gt=0)
    payment_latency_ms: int = 0
    # payments: a provider call that does not answer within this is given up as
    # `payment_error` (0 = 1.5 × the payment step's timeout: the saga times out first)
    payment_provider_timeout_seconds: float = 0.0
    payment_max_attempts: int = Field(default=5, ge=1)
    payment_retry_base_ms: int = 200
    # how long a payments handler keeps its message while the provider works; a slower
    # call goes on in the background (the in-process bus holds the producer meanwhile)
    payment_handler_wait_seconds: float = 1.0
    http_client_timeout_seconds: float = 5.0
    gateway_timeout_seconds: float = 10.0

    log_level: str = "INFO"

    @property
    def payment_step_timeout_seconds(self) -> float:
        """The payment step's deadline: its own timeout, bounded by every step's."""
        return min(self.saga_step_timeout_seconds, self.saga_payment_timeout_seconds)

    def service_url(self, service: str) -> str | None:
        url: str | None = getattr(self, f"{service}_url")
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
