"""The JWT secret: from `PROST_JWT_SECRET`, or (embedded mode only) generated once and
kept in the data directory so that tokens survive a restart."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from prost.kit.settings import Settings

MIN_SECRET_BYTES = 32


class SecretMissing(RuntimeError):
    pass


def jwt_secret(settings: Settings, *, embedded: bool) -> str:
    if settings.jwt_secret is not None:
        value = settings.jwt_secret.get_secret_value()
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise SecretMissing(f"PROST_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return value
    if not embedded:
        raise SecretMissing("PROST_JWT_SECRET is required in the distributed mode (at least 32 bytes)")
    path = Path(settings.data_dir) / "jwt_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(48)
        f.write(value)
    return value
