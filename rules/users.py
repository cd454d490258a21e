"""Staff accounts, their roles per agency, and the checks that guard what each role may do.

Roles rise in order: a viewer reads, an operator also acknowledges and resolves alerts and
updates dispatch jobs, an editor also changes rules and devices, and an admin also manages the
users of the agency. A role given for ``*`` applies in every agency. Passwords are hashed with
Argon2id (argon2-cffi); no account is ever created with a default password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from rules.i18n import add_messages
from rules.store.models import AuditEntry, StaffUser, utc_now

ROLES = ("viewer", "operator", "editor", "admin")
ALL_AGENCIES = "*"
MIN_PASSWORD_LENGTH = 10
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,59}$")

# The lowest role that has each permission.
PERMISSIONS = {
    "view": "viewer",
    "handle_alerts": "operator",
    "update_jobs": "operator",
    "retry_runs": "operator",
    "edit_config": "editor",
    "manage_users": "admin",
}

_hasher = PasswordHasher()

add_messages(
    {
        "account_no_role": {
            "en": "give the account at least one role, e.g. dinas-sda=operator",
            "id": "beri akun ini setidaknya satu peran, mis. dinas-sda=operator",
        },
        "account_unknown_role": {
            "en": "unknown role {role}: use one of {roles}",
            "id": "peran {role} tidak dikenal: gunakan salah satu dari {roles}",
        },
        "account_unknown_agency": {
            "en": "unknown agency {agency}: use an agency id from config.yaml, or * for every agency",
            "id": "instansi {agency} tidak dikenal: gunakan id instansi dari config.yaml, atau * untuk semua instansi",
        },
        "account_bad_username": {
            "en": "invalid username {username}: use 2 to 60 lowercase letters, digits, dots, dashes or underscores",
            "id": "nama pengguna {username} tidak sah: gunakan 2 sampai 60 huruf kecil, angka, titik, "
            "tanda hubung atau garis bawah",
        },
        "account_exists": {
            "en": "an account named {username} already exists: choose another username",
            "id": "akun bernama {username} sudah ada: pilih nama pengguna lain",
        },
        "account_not_found": {
            "en": "no account named {username}",
            "id": "tidak ada akun bernama {username}",
        },
        "password_too_short": {
            "en": "the password is too short: use at least {minimum} characters",
            "id": "kata sandi terlalu pendek: gunakan minimal {minimum} karakter",
        },
    }
)


class AccountError(ValueError):
    """A request about an account that cannot be carried out; ``code`` is an i18n message code."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code, params)
        self.code = code
        self.params = params


class AccessDenied(PermissionError):
    """The staff member's roles do not allow the action in that agency."""

    def __init__(self, staff: Staff, permission: str, agency_id: str) -> None:
        super().__init__(f"{staff.username} may not {permission} in agency {agency_id}")
        self.username = staff.username
        self.permission = permission
        self.agency_id = agency_id


@dataclass(frozen=True)
class Staff:
    """A logged-in staff member, as the pages see them."""

    username: str
    full_name: str
    roles: Mapping[str, str] = field(default_factory=dict)

    def role_in(self, agency_id: str) -> str | None:
        """Return the highest role this member has in ``agency_id``, directly or through ``*``."""
        held = [role for key, role in self.roles.items() if key in (agency_id, ALL_AGENCIES)]
        if not held:
            return None
        return max(held, key=ROLES.index)

    def can(self, permission: str, agency_id: str) -> bool:
        role = self.role_in(agency_id)
        return role is not None and ROLES.index(role) >= ROLES.index(PERMISSIONS[permission])

    def require(self, permission: str, agency_id: str) -> None:
        if not self.can(permission, agency_id):
            raise AccessDenied(self, permission, agency_id)

    def agencies(self, permission: str, known: Iterable[str]) -> list[str]:
        """Return the ids among ``known`` in which this member has ``permission``."""
        return [agency_id for agency_id in known if self.can(permission, agency_id)]

    @property
    def author(self) -> str:
        """Name and address for a git commit made on this member's behalf."""
        return f"{self.full_name} <{self.username}@simpul.local>"


def _check_roles(roles: Mapping[str, str], agencies: Iterable[str] | None) -> None:
    if not roles:
        raise AccountError("account_no_role")
    known = None if agencies is None else {*agencies, ALL_AGENCIES}
    for agency_id, role in roles.items():
        if role not in ROLES:
            raise AccountError("account_unknown_role", role=role, roles=", ".join(ROLES))
        if known is not None and agency_id not in known:
            raise AccountError("account_unknown_agency", agency=agency_id)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError("password_too_short", minimum=MIN_PASSWORD_LENGTH)


def _staff(user: StaffUser) -> Staff:
    return Staff(username=user.username, full_name=user.full_name, roles=dict(user.roles))


def create_user(
    *,
    engine: Engine,
    username: str,
    full_name: str,
    password: str,
    roles: Mapping[str, str],
    agencies: Iterable[str] | None = None,
    by: str,
) -> Staff:
    """Add an account; ``agencies``, when given, are the agency ids that ``roles`` may name."""
    if not USERNAME.match(username):
        raise AccountError("account_bad_username", username=username)
    _check_roles(roles, agencies)
    _check_password(password)

    now = utc_now()
    with Session(engine) as session:
        if session.get(StaffUser, username) is not None:
            raise AccountError("account_exists", username=username)
        user = StaffUser(
            username=username,
            full_name=full_name.strip() or username,
            password_hash=_hasher.hash(password),
            roles=dict(roles),
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        detail = {"roles": dict(roles)}
        session.add(AuditEntry(at=now, actor=by, action="user_created", target=f"user:{username}", detail=detail))
        session.commit()
        return _staff(user)


def authenticate(*, engine: Engine, username: str, password: str) -> Staff | None:
    """Return the staff view of an active account whose password matches, else None."""
    with Session(engine) as session:
        user = session.get(StaffUser, username.strip().lower())
        if user is None or not user.active:
            # Hash anyway, so that a missing account takes as long as a wrong password.
            _hasher.hash(password)
            return None
        try:
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
            session.add(user)
            session.commit()
        return _staff(user)


def set_password(*, engine: Engine, username: str, password: str, by: str) -> None:
    _check_password(password)
    with Session(engine) as session:
        user = session.get(StaffUser, username)
        if user is None:
            raise AccountError("account_not_found", username=username)
        now = utc_now()
        user.password_hash = _hasher.hash(password)
        user.updated_at = now
        session.add(user)
        session.add(AuditEntry(at=now, actor=by, action="password_changed", target=f"user:{username}", detail={}))
        session.commit()


def update_user(
    *,
    engine: Engine,
    username: str,
    roles: Mapping[str, str],
    active: bool,
    agencies: Iterable[str] | None = None,
    by: str,
) -> Staff:
    """Replace an account's roles and switch it on or off."""
    _check_roles(roles, agencies)
    with Session(engine) as session:
        user = session.get(StaffUser, username)
        if user is None:
            raise AccountError("account_not_found", username=username)
        now = utc_now()
        detail = {"roles": {"from": dict(user.roles), "to": dict(roles)}, "active": {"from": user.active, "to": active}}
        user.roles = dict(roles)
        user.active = active
        user.updated_at = now
        session.add(user)
        session.add(AuditEntry(at=now, actor=by, action="user_updated", target=f"user:{username}", detail=detail))
        session.commit()
        return _staff(user)


def list_users(*, engine: Engine) -> list[StaffUser]:
    with Session(engine) as session:
        return list(session.execute(select(StaffUser).order_by(StaffUser.username)).scalars())


def count_users(*, engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(StaffUser)).scalar_one())
