"""Shared page state: the config, the store, the logged-in staff member and the language.

The config file is ``$SIMPUL_CONFIG`` (default ``config.yaml``) and is read again whenever it
changes on disk; the store is ``$SIMPUL_DATABASE_URL`` or the config's ``simpul.database``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from rules.config import Agency, Config
from rules.loader import load_config
from rules.secrets import resolve_env_references
from rules.store.db import connect
from rules.users import Staff
from ui.text import t

LANGUAGE_KEY = "lang"
STAFF_KEY = "staff"


@dataclass(frozen=True)
class Loaded:
    config: Config
    problems: int


def config_path() -> Path:
    return Path(os.environ.get("SIMPUL_CONFIG", "config.yaml"))


@st.cache_resource(show_spinner=False)
def _load(path: str, changed_ns: int) -> Loaded:
    # changed_ns is part of the cache key (Streamlit leaves out arguments named with a leading
    # underscore), so a saved or hand-edited file is read again.
    loaded = load_config(path)
    return Loaded(config=loaded.config, problems=len(loaded.problems))


def config() -> Config:
    path = config_path()
    return _load(str(path), path.stat().st_mtime_ns).config


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Engine:
    return connect(url)


def store() -> Engine:
    url = os.environ.get("SIMPUL_DATABASE_URL") or config().simpul.database
    return _store(resolve_env_references(url))


def lang() -> str:
    chosen = st.session_state.get(LANGUAGE_KEY)
    return chosen if chosen in ("id", "en") else config().simpul.language


def staff() -> Staff | None:
    return st.session_state.get(STAFF_KEY)


def require_staff() -> Staff:
    """Return the logged-in staff member, or stop the page when no one is logged in."""
    member = staff()
    if member is None:
        st.warning(t("login.required", lang()))
        st.stop()
    return member


def agencies() -> dict[str, Agency]:
    return {agency.id: agency for agency in config().agencies}


def agency_zone(agency_id: str | None) -> str:
    agency = agencies().get(agency_id or "")
    return agency.timezone if agency is not None else config().simpul.timezone
