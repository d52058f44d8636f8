"""The users service's rules. No I/O here: the API and the repository call these.

- **Identity fields.** An email must be syntactically valid (`email-validator`, no DNS;
  `.test` domains allowed)
  and is kept in its normalised form (domain lower-cased, Unicode NFC); a username is
  3–32 ASCII letters, digits, `_`, `.` or `-`. Both are unique case-insensitively
  (unique indexes on `lower(...)` are the final guard under races).
- **Passwords.** At least 8 characters and at most 72 bytes of UTF-8: bcrypt reads
  only 72 bytes, and a longer password is refused, never silently cut.
- **Hashing** lives in `passwords.py` (CPU work kept off the event loop).
- **Login failures** are counted per account and per client address in a sliding
  window (`LoginLimits`); the right password is refused only while the window is
  full, never for good.
- **Who may see or change a profile**: `check_can_read` / `check_can_change`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from prost.kit.auth import Principal
from prost.kit.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72
EMAIL_MAX_CHARS = 320
ROLE_CUSTOMER = "customer"
ROLE_ADMIN = "admin"


# -- errors ---------------------------------------------------------------------------


class UserNotFound(NotFound):
    default_message = "user not found"


class EmailTaken(Conflict):
    default_message = "this email is already registered"


class UsernameTaken(Conflict):
    default_message = "this username is taken"


class InvalidCredentials(Unauthorized):
    """The one answer for an unknown email and for a wrong password alike."""

    default_message = "invalid email or password"


class TokenOutdated(Unauthorized):
    default_message = "token revoked: the credentials changed since it was issued"


class NotYourProfile(Forbidden):
    default_message = "you may only act on your own profile"


class CurrentPasswordRequired(ValidationFailed):
    default_message = "current_password is required to change the email or the password"


class WrongCurrentPassword(Forbidden):
    default_message = "current_password is incorrect"


# -- field rules -----------------------------------------------------------------------


def normalize_email(value: str) -> str:
    """The stored form of an email, or ValueError with a reason."""
    if len(value) > EMAIL_MAX_CHARS:
        raise ValueError(f"email is longer than {EMAIL_MAX_CHARS} characters")
    try:
        # test_environment: also accept the `.test` domains reserved for testing (RFC 2606),
        # which the demo data and the test suite use; other special-use names stay refused.
        return validate_email(value.strip(), check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email: {exc}") from exc


def lookup_email(value: str) -> str:
    """The form used to look an email up at login: normalised when valid, else as typed.

    Lookups compare `lower(email)`, so case never matters."""
    try:
        return normalize_email(value)
    except ValueError:
        return value.strip()


def check_username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value):
        raise ValueError("username must be 3-32 characters: letters, digits, '_', '.' or '-'")
    return value


def check_new_password(value: str) -> str:
    if len(value) < PASSWORD_MIN_CHARS:
        raise ValueError(f"password must be at least {PASSWORD_MIN_CHARS} characters")
    if len(value.encode()) > PASSWORD_MAX_BYTES:
        raise ValueError(f"password must be at most {PASSWORD_MAX_BYTES} bytes (UTF-8)")
    return value


def fits_bcrypt(password: str) -> bool:
    """Whether bcrypt can check this password at all (a longer one can match nothing)."""
    return len(password.encode()) <= PASSWORD_MAX_BYTES


def admin_username_base(email: str) -> str:
    """A username for an admin made from an email's local part (`ops.team@x` → `ops.team`)."""
    local = re.sub(r"[^A-Za-z0-9_.\-]", "", email.split("@", 1)[0])[:24]
    return local if len(local) >= 3 else f"admin{local}"


# -- authorisation ---------------------------------------------------------------------


def check_can_read(principal: Principal, user_id: uuid.UUID) -> None:
    """Own profile, or any profile for an admin."""
    if principal.id != user_id and not principal.is_admin:
        raise NotYourProfile


def check_can_change(principal: Principal, user_id: uuid.UUID) -> None:
    """Own profile only: an admin changes nobody else's credentials either."""
    if principal.id != user_id:
        raise NotYourProfile


def check_token_current(principal: Principal, credentials_version: int) -> None:
    """A token issued before the latest password or email change is refused."""
    if principal.version < credentials_version:
        raise TokenOutdated


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """What a PATCH asks for, after comparing it with the stored row."""

    username: str | None
    email: str | None
    password: str | None

    @property
    def touches_credentials(self) -> bool:
        return self.email is not None or self.password is not None

    @property
    def is_empty(self) -> bool:
        return self.username is None and self.email is None and self.password is None


def plan_change(
    *, current_email: str, current_username: str, username: str | None, email: str | None, password: str | None
) -> ProfileChange:
    """Drop the fields that would change nothing; a new email differs from the stored one
    byte for byte (a change of case is a change, and re-verifies the password)."""
    return ProfileChange(
        username=username if username is not None and username != current_username else None,
        email=email if email is not None and email != current_email else None,
        password=password,
    )


# -- login limits ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Failed logins allowed per sliding window: per account, and 10× per client address."""

    max_failures: int
    window_seconds: int

    @property
    def per_address(self) -> int:
        return self.max_failures * 10

    def limit_for(self, scope: str) -> int:
        return self.per_address if scope == "address" else self.max_failures
