"""Users: an agency admin adds accounts, changes their roles and disables them, for their own agencies."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from rules import users
from rules.users import ROLES
from ui import context
from ui.text import t

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agencies = context.agencies()
managed = member.agencies("manage_users", list(agencies))

st.title(t("nav.users", lang))
if "users_done" in st.session_state:
    st.success(st.session_state.pop("users_done"))
if not managed:
    st.warning(t("users.admin_only", lang))
    st.stop()


def agency_name(agency_id: str) -> str:
    return t("users.every_agency", lang) if agency_id == users.ALL_AGENCIES else agencies[agency_id].name


def report(error: users.AccountError) -> None:
    from rules.i18n import translate

    st.error(translate(error.code, lang, **error.params))


# Accounts are listed when they have a role in an agency this admin manages. An account with a
# role for every agency is listed only to admins who have one too.
scope = {*managed, users.ALL_AGENCIES} if member.roles.get(users.ALL_AGENCIES) == "admin" else set(managed)
accounts = [account for account in users.list_users(engine=db) if set(account.roles) & scope]
st.dataframe(
    pd.DataFrame(
        [
            {
                t("users.username", lang): account.username,
                t("users.full_name", lang): account.full_name,
                t("users.roles", lang): ", ".join(
                    f"{agency_name(key)}: {t(f'role.{role}', lang)}" for key, role in sorted(account.roles.items())
                ),
                t("users.active", lang): bool(account.active),
            }
            for account in accounts
        ]
    ),
    hide_index=True,
    width="stretch",
)

st.subheader(t("users.add", lang))
with st.form("users_add", clear_on_submit=False):
    username = st.text_input(t("users.username", lang), key="users_new_username")
    full_name = st.text_input(t("users.full_name", lang), key="users_new_name")
    agency_id = st.selectbox(t("common.agency", lang), managed, format_func=agency_name, key="users_new_agency")
    role = st.selectbox(
        t("users.role", lang), ROLES, format_func=lambda key: t(f"role.{key}", lang), key="users_new_role"
    )
    password = st.text_input(t("users.password", lang), type="password", key="users_new_password")
    repeat = st.text_input(t("users.password_again", lang), type="password", key="users_new_repeat")
    if st.form_submit_button(t("users.create", lang), type="primary"):
        if password != repeat:
            st.error(t("users.passwords_differ", lang))
        else:
            try:
                users.create_user(
                    engine=db,
                    username=username.strip().lower(),
                    full_name=full_name,
                    password=password,
                    roles={agency_id: role},
                    agencies=managed,
                    by=member.username,
                )
            except users.AccountError as error:
                report(error)
            else:
                st.session_state["users_done"] = t("users.created", lang, username=username.strip().lower())
                st.rerun()

editable = [account for account in accounts if account.username != member.username and set(account.roles) <= scope]
if editable:
    st.subheader(t("users.change", lang))
    by_name = {account.username: account for account in editable}
    chosen = st.selectbox(t("users.username", lang), list(by_name), key="users_edit_username")
    account = by_name[chosen]
    with st.form("users_edit"):
        roles = {}
        for agency_id in managed:
            current = account.roles.get(agency_id)
            options = ["", *ROLES]
            picked = st.selectbox(
                agency_name(agency_id),
                options,
                index=options.index(current or ""),
                format_func=lambda key: t(f"role.{key}", lang) if key else t("users.no_role", lang),
                key=f"users_edit_role_{chosen}_{agency_id}",
            )
            if picked:
                roles[agency_id] = picked
        # Roles in agencies this admin does not manage stay as they are.
        roles.update({key: role for key, role in account.roles.items() if key not in managed})
        active = st.checkbox(t("users.active", lang), value=account.active, key=f"users_edit_active_{chosen}")
        if st.form_submit_button(t("common.save", lang), type="primary"):
            try:
                users.update_user(
                    engine=db, username=chosen, roles=roles, active=active, agencies=list(agencies), by=member.username
                )
            except users.AccountError as error:
                report(error)
            else:
                st.session_state["users_done"] = t("users.updated", lang, username=chosen)
                st.rerun()
