"""The form that registers a device or edits one, written back to config.yaml."""

from __future__ import annotations

from typing import Any

import streamlit as st

from rules.config import Config, Device
from rules.config_edit import ConfigEditError
from rules.users import Staff
from ui import context
from ui.saving import editor_since, forget, save
from ui.text import t


def _attributes(text: str) -> tuple[dict[str, Any], list[str]]:
    """``name = value`` lines as attributes, numbers as numbers; also the lines that are not pairs."""
    attributes: dict[str, Any] = {}
    bad = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, separator, value = line.partition("=")
        if not separator or not name.strip():
            bad.append(line)
            continue
        raw = value.strip()
        try:
            attributes[name.strip()] = int(raw) if raw.lstrip("-").isdigit() else float(raw.replace(",", "."))
        except ValueError:
            attributes[name.strip()] = raw
    return attributes, bad


def device_form(
    *, config: Config, member: Staff, agency_ids: list[str], device: Device | None, lang: str, key: str
) -> None:
    """Show the form; on submit validate the whole config, then save, commit and audit it."""
    agencies = {agency.id: agency for agency in config.agencies if agency.id in agency_ids}
    kinds = list(config.kinds)
    snapshot = f"{key}_editor"
    target = device.id if device else None
    try:
        editor_since(snapshot, reload=st.session_state.get(f"{key}_for") != target)
    except (ConfigEditError, OSError) as error:
        st.error(error.message(lang) if isinstance(error, ConfigEditError) else str(error))
        return
    st.session_state[f"{key}_for"] = target
    with st.form(key):
        device_id = st.text_input("id", value=device.id if device else "", disabled=device is not None, key=f"{key}_id")
        name = st.text_input(t("devices.name", lang), value=device.name if device else "", key=f"{key}_name")
        columns = st.columns(2)
        agency_options = list(agencies)
        agency_id = columns[0].selectbox(
            t("common.agency", lang),
            agency_options,
            index=agency_options.index(device.agency) if device and device.agency in agency_options else 0,
            format_func=lambda option: agencies[option].name,
            key=f"{key}_agency",
        )
        kind = columns[1].selectbox(
            t("devices.kind", lang),
            kinds,
            index=kinds.index(device.kind) if device and device.kind in kinds else 0,
            format_func=lambda option: config.kinds[option].name or option,
            key=f"{key}_kind",
        )
        location = device.location if device else None
        lat = columns[0].number_input(
            t("devices.lat", lang),
            -90.0,
            90.0,
            value=location.lat if location else None,
            format="%.6f",
            key=f"{key}_lat",
        )
        lon = columns[1].number_input(
            t("devices.lon", lang),
            -180.0,
            180.0,
            value=location.lon if location else None,
            format="%.6f",
            key=f"{key}_lon",
        )
        tags = st.text_input(
            t("devices.tags_hint", lang), value=", ".join(device.tags) if device else "", key=f"{key}_tags"
        )
        attributes_text = st.text_area(
            t("devices.attributes_hint", lang),
            value="\n".join(f"{name} = {value}" for name, value in device.attributes.items()) if device else "",
            key=f"{key}_attributes",
        )
        enabled = st.checkbox(t("devices.enabled", lang), value=device.enabled if device else True, key=f"{key}_on")
        submitted = st.form_submit_button(t("common.save", lang), type="primary")
    if not submitted:
        return

    attributes, bad = _attributes(attributes_text)
    if bad:
        st.error(t("devices.bad_attributes", lang, lines="; ".join(bad)))
        return
    if device is not None and not member.can("edit_config", device.agency):
        st.error(t("devices.not_yours", lang))
        return

    editor = editor_since(snapshot)
    try:
        item = editor.get_device(device.id) if device else {"id": device_id.strip()}
    except ConfigEditError as error:
        st.error(error.message(lang))
        return
    item.update({"name": name.strip(), "agency": agency_id, "kind": kind})
    if lat is not None and lon is not None:
        item["location"] = {**(item.get("location") or {}), "lat": lat, "lon": lon}
    else:
        item.pop("location", None)
    for field, value in (("tags", [tag.strip() for tag in tags.split(",") if tag.strip()]), ("attributes", attributes)):
        if value:
            item[field] = value
        else:
            item.pop(field, None)
    if enabled:
        item.pop("enabled", None)
    else:
        item["enabled"] = False

    try:
        editor.put_device(item)
    except ConfigEditError as error:
        st.error(error.message(lang))
        return
    result = save(editor, member=member, db=context.store(), lang=lang)
    if result is not None:
        forget(snapshot)
        st.session_state.pop(f"{key}_for", None)
        st.session_state["devices_done"] = t(
            "devices.saved", lang, id=item["id"], commit=result.commit[:10] if result.commit else t("save.no_git", lang)
        )
        st.rerun()
