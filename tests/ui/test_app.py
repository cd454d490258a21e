"""Logging in, the language switch and the navigation of the staff pages."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.ui.conftest import APP, log_in


def test_login_page_is_indonesian(site: object) -> None:
    app = AppTest.from_file(str(APP), default_timeout=60).run()

    assert app.title[0].value == "Simpul · Masuk"
    assert app.text_input(key="login_username").label == "Nama pengguna"


def test_wrong_password_is_rejected(site: object) -> None:
    app = AppTest.from_file(str(APP), default_timeout=60).run()

    log_in(app, "sari", "salah-sekali-123")

    assert [error.value for error in app.error] == ["Nama pengguna atau kata sandi salah, atau akun dinonaktifkan."]
    assert "staff" not in app.session_state


def test_login_opens_the_overview(open_page) -> None:  # type: ignore[no-untyped-def]
    app = open_page("sari")

    assert app.session_state["staff"].username == "sari"
    assert app.title[0].value == "Ringkasan"
