"""Saving an edited config from a page, and showing why a save was refused."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from rules.config_edit import ConfigConflict, ConfigEditError, ConfigEditor, ConfigInvalid, SaveResult, StaffMember
from rules.users import Staff
from ui import context
from ui.text import t


def editor_since(key: str, *, reload: bool = False) -> ConfigEditor:
    """Return an editor of the config file as it was when the form under ``key`` was loaded.

    Edits go onto that copy, so a save notices a file that someone changed meanwhile instead of
    writing the form's older values over it. Raise ConfigEditError or OSError when the file
    cannot be read.
    """
    path = context.config_path()
    if reload or key not in st.session_state:
        st.session_state[key] = path.read_bytes()
    return ConfigEditor.parse(path, st.session_state[key])


def forget(key: str) -> None:
    st.session_state.pop(key, None)


def save(editor: ConfigEditor, *, member: Staff, db: Engine, lang: str) -> SaveResult | None:
    """Validate, write, commit and audit the edit, or show why it was rejected and return None.

    An invalid config shows every problem with its key path. A file changed on disk since the
    form loaded it shows both versions. Nothing is written in either case.
    """
    author = StaffMember(username=member.username, full_name=member.full_name)
    try:
        return editor.save(author=author, db=db)
    except ConfigInvalid as error:
        st.error(t("save.invalid", lang, count=len(error.problems)))
        for problem in error.problems:
            st.markdown(f"- `{problem.path or editor.file_name}` · {problem.message(lang)}")
    except ConfigConflict as error:
        st.error(t("save.conflict", lang))
        left, right = st.columns(2)
        left.caption(t("save.on_disk", lang))
        left.code(error.disk_text, language="yaml", wrap_lines=True)
        right.caption(t("save.yours", lang))
        right.code(error.new_text, language="yaml", wrap_lines=True)
    except ConfigEditError as error:
        st.error(error.message(lang))
    return None
