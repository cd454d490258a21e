"""Simpul staff pages: `python hub.py ui` or `streamlit run ui/app.py` from the repository root.

This entry file sets up the page, the language switch and the login, then hands over to the
page the staff member picked in the navigation.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts this file's folder on the path, not the repository root that contains rules/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from rules import users  # noqa: E402
from ui import context  # noqa: E402
from ui.text import t  # noqa: E402

LANGUAGE_NAMES = {"id": "Bahasa Indonesia", "en": "English"}


def language_switch() -> str:
    if context.LANGUAGE_KEY not in st.session_state:
        st.session_state[context.LANGUAGE_KEY] = context.config().simpul.language
    st.sidebar.radio(
        t("app.language", context.lang()),
        options=list(LANGUAGE_NAMES),
        format_func=LANGUAGE_NAMES.__getitem__,
        key=context.LANGUAGE_KEY,
        horizontal=True,
    )
    return context.lang()


def login(lang: str) -> None:
    st.title(t("login.title", lang))
    if users.count_users(engine=context.store()) == 0:
        st.info(t("login.no_accounts", lang))
        st.code("python hub.py users add admin --name 'Nama Lengkap' --role '*=admin'", language="bash")
        st.stop()

    with st.form("login_form"):
        username = st.text_input(t("login.username", lang), key="login_username")
        password = st.text_input(t("login.password", lang), type="password", key="login_password")
        submitted = st.form_submit_button(t("login.submit", lang), type="primary")
    if submitted:
        member = users.authenticate(engine=context.store(), username=username, password=password)
        if member is None:
            st.error(t("login.failed", lang))
        else:
            st.session_state[context.STAFF_KEY] = member
            st.rerun()
    st.stop()


def pages(lang: str, is_admin: bool) -> list[st.Page]:
    entries = [
        ("views/overview.py", "nav.overview", ":material/map:"),
        ("views/devices.py", "nav.devices", ":material/sensors:"),
        ("views/rules.py", "nav.rules", ":material/rule:"),
        ("views/backtest.py", "nav.backtest", ":material/history:"),
        ("views/alerts.py", "nav.alerts", ":material/notifications:"),
        ("views/dispatch.py", "nav.dispatch", ":material/local_shipping:"),
        ("views/actions.py", "nav.actions", ":material/sync_alt:"),
        ("views/audit.py", "nav.audit", ":material/receipt_long:"),
    ]
    if is_admin:
        entries.append(("views/users.py", "nav.users", ":material/group:"))
    return [st.Page(path, title=t(label, lang), icon=icon, url_path=Path(path).stem) for path, label, icon in entries]


def main() -> None:
    st.set_page_config(page_title="Simpul", page_icon=":material/water:", layout="wide")
    lang = language_switch()
    member = context.staff()
    if member is None:
        login(lang)
        return

    st.sidebar.caption(t("app.signed_in_as", lang, name=member.full_name, username=member.username))
    if st.sidebar.button(t("app.logout", lang), key="app_logout"):
        del st.session_state[context.STAFF_KEY]
        st.rerun()
    agency_ids = [agency.id for agency in context.config().agencies]
    is_admin = bool(member.agencies("manage_users", agency_ids))
    st.navigation(pages(lang, is_admin)).run()


main()
