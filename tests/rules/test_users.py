"""Staff accounts: Argon2 hashes, logging in, roles per agency and the ``*`` role."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from rules import users
from rules.store.models import StaffUser

PASSWORD = "kata-sandi-panjang"
AGENCIES = ["bpbd", "dinas-sda", "dlh"]


def test_password_stored_as_argon2_hash(db: Engine) -> None:
    users.create_user(engine=db, username="sari", full_name="Sari", password=PASSWORD, roles={"dlh": "viewer"}, by="t")

    with Session(db) as session:
        stored = session.get(StaffUser, "sari")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


def test_login_needs_password_and_active_account(db: Engine) -> None:
    users.create_user(engine=db, username="sari", full_name="Sari", password=PASSWORD, roles={"dlh": "viewer"}, by="t")

    assert users.authenticate(engine=db, username="sari", password=PASSWORD) is not None
    assert users.authenticate(engine=db, username="Sari ", password=PASSWORD) is not None
    assert users.authenticate(engine=db, username="sari", password=PASSWORD + "x") is None
    assert users.authenticate(engine=db, username="nobody", password=PASSWORD) is None

    users.update_user(engine=db, username="sari", roles={"dlh": "viewer"}, active=False, by="admin")
    assert users.authenticate(engine=db, username="sari", password=PASSWORD) is None


@pytest.mark.parametrize(
    ("roles", "code"),
    [
        ({}, "account_no_role"),
        ({"dlh": "boss"}, "account_unknown_role"),
        ({"dinas-pu": "viewer"}, "account_unknown_agency"),
    ],
)
def test_bad_roles_are_rejected(db: Engine, roles: dict[str, str], code: str) -> None:
    with pytest.raises(users.AccountError) as caught:
        users.create_user(
            engine=db, username="sari", full_name="Sari", password=PASSWORD, roles=roles, agencies=AGENCIES, by="t"
        )

    assert caught.value.code == code
    assert users.count_users(engine=db) == 0


def test_short_password_and_taken_username(db: Engine) -> None:
    with pytest.raises(users.AccountError, match="password_too_short"):
        users.create_user(
            engine=db, username="sari", full_name="Sari", password="pendek", roles={"dlh": "admin"}, by="t"
        )
    users.create_user(engine=db, username="sari", full_name="Sari", password=PASSWORD, roles={"dlh": "admin"}, by="t")
    with pytest.raises(users.AccountError, match="account_exists"):
        users.create_user(
            engine=db, username="sari", full_name="Sari", password=PASSWORD, roles={"dlh": "admin"}, by="t"
        )


def test_roles_stay_inside_agency() -> None:
    operator = users.Staff(username="rina", full_name="Rina", roles={"dinas-sda": "operator", "dlh": "viewer"})

    assert operator.can("handle_alerts", "dinas-sda")
    assert not operator.can("edit_config", "dinas-sda")
    assert operator.can("view", "dlh")
    assert not operator.can("handle_alerts", "dlh")
    assert not operator.can("view", "bpbd")
    with pytest.raises(users.AccessDenied):
        operator.require("update_jobs", "dlh")


def test_every_agency_role_combines() -> None:
    member = users.Staff(username="kepala", full_name="Kepala", roles={"*": "viewer", "bpbd": "admin"})

    assert member.agencies("view", AGENCIES) == AGENCIES
    assert member.agencies("manage_users", AGENCIES) == ["bpbd"]
    assert member.role_in("dlh") == "viewer"
