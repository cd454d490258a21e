"""Every label and message of the staff pages, in Indonesian and English.

Pages call ``t(key, lang, **params)``; a key missing from ``LABELS`` raises KeyError unless a
``default`` is given, so a forgotten label fails the page tests instead of showing a raw key.
"""

from __future__ import annotations

from typing import Any

# Device state -> (map colour, Streamlit text colour for the legend).
STATE_COLOURS = {
    "firing": ("#d62728", "red"),
    "offline": ("#6f42c1", "violet"),
    "pending": ("#ff9f1c", "orange"),
    "normal": ("#2ca02c", "green"),
    "no_data": ("#9e9e9e", "gray"),
    "disabled": ("#cfcfcf", "gray"),
}

LABELS: dict[str, dict[str, str]] = {
    # --- app, login and navigation ---
    "app.language": {"id": "Bahasa", "en": "Language"},
    "app.logout": {"id": "Keluar", "en": "Log out"},
    "app.signed_in_as": {"id": "Masuk sebagai {name} ({username})", "en": "Signed in as {name} ({username})"},
    "login.title": {"id": "Simpul · Masuk", "en": "Simpul · Log in"},
    "login.username": {"id": "Nama pengguna", "en": "Username"},
    "login.password": {"id": "Kata sandi", "en": "Password"},
    "login.submit": {"id": "Masuk", "en": "Log in"},
    "login.failed": {
        "id": "Nama pengguna atau kata sandi salah, atau akun dinonaktifkan.",
        "en": "Wrong username or password, or the account is disabled.",
    },
    "login.required": {"id": "Silakan masuk terlebih dahulu.", "en": "Please log in first."},
    "login.no_accounts": {
        "id": "Belum ada akun. Buat akun admin pertama di server dengan perintah di bawah; "
        "kata sandinya akan ditanyakan.",
        "en": "There are no accounts yet. Create the first admin account on the server with the command "
        "below; it asks for the password.",
    },
    "nav.overview": {"id": "Ringkasan", "en": "Overview"},
    "nav.devices": {"id": "Perangkat", "en": "Devices"},
    "nav.rules": {"id": "Aturan", "en": "Rules"},
    "nav.backtest": {"id": "Uji pada riwayat", "en": "Try on history"},
    "nav.alerts": {"id": "Peringatan", "en": "Alerts"},
    "nav.dispatch": {"id": "Penugasan", "en": "Dispatch"},
    "nav.actions": {"id": "Aksi & integrasi", "en": "Actions & integrations"},
    "nav.audit": {"id": "Audit", "en": "Audit"},
    "nav.users": {"id": "Pengguna", "en": "Users"},
    # --- words used on several pages ---
    "common.agency": {"id": "Instansi", "en": "Agency"},
    "common.device": {"id": "Perangkat", "en": "Device"},
    "common.rule": {"id": "Aturan", "en": "Rule"},
    "common.state": {"id": "Keadaan", "en": "State"},
    "common.status": {"id": "Status", "en": "Status"},
    "common.severity": {"id": "Tingkat", "en": "Severity"},
    "common.value": {"id": "Nilai", "en": "Value"},
    "common.message": {"id": "Pesan", "en": "Message"},
    "common.note": {"id": "Catatan", "en": "Note"},
    "common.save": {"id": "Simpan", "en": "Save"},
    "common.last_seen": {"id": "Terakhir terlihat", "en": "Last seen"},
    "common.no_agency": {
        "id": "Akun Anda belum punya peran di instansi mana pun. Minta admin instansi menambahkannya.",
        "en": "Your account has no role in any agency yet. Ask your agency's admin to add one.",
    },
    "severity.critical": {"id": "Kritis", "en": "Critical"},
    "severity.high": {"id": "Tinggi", "en": "High"},
    "severity.medium": {"id": "Sedang", "en": "Medium"},
    "severity.low": {"id": "Rendah", "en": "Low"},
    "state.firing": {"id": "Aktif (menyala)", "en": "Firing"},
    "state.offline": {"id": "Offline", "en": "Offline"},
    "state.pending": {"id": "Menunggu durasi", "en": "Pending"},
    "state.normal": {"id": "Normal", "en": "Normal"},
    "state.no_data": {"id": "Belum ada data", "en": "No data yet"},
    "state.disabled": {"id": "Nonaktif", "en": "Disabled"},
    "role.viewer": {"id": "Pemantau", "en": "Viewer"},
    "role.operator": {"id": "Operator", "en": "Operator"},
    "role.editor": {"id": "Editor", "en": "Editor"},
    "role.admin": {"id": "Admin", "en": "Admin"},
    "alert.status.open": {"id": "Terbuka", "en": "Open"},
    "alert.status.acknowledged": {"id": "Diterima", "en": "Acknowledged"},
    "alert.status.resolved": {"id": "Selesai", "en": "Resolved"},
    "job.status.new": {"id": "Baru", "en": "New"},
    "job.status.assigned": {"id": "Ditugaskan", "en": "Assigned"},
    "job.status.in_progress": {"id": "Dikerjakan", "en": "In progress"},
    "job.status.done": {"id": "Selesai", "en": "Done"},
    "job.status.cancelled": {"id": "Dibatalkan", "en": "Cancelled"},
    "run.status.pending": {"id": "Menunggu", "en": "Pending"},
    "run.status.failed": {"id": "Gagal, dicoba lagi", "en": "Failed, retrying"},
    "run.status.dead": {"id": "Mati", "en": "Dead"},
    "run.status.held": {"id": "Ditahan (flapping)", "en": "Held (flapping)"},
    "run.status.succeeded": {"id": "Berhasil", "en": "Succeeded"},
    "run.status.skipped": {"id": "Dilewati", "en": "Skipped"},
    # --- overview ---
    "overview.map": {"id": "Peta perangkat", "en": "Device map"},
    "overview.without_location": {
        "id": "{count} perangkat tanpa koordinat tidak tampil di peta.",
        "en": "{count} devices without coordinates are not on the map.",
    },
    "overview.by_agency": {"id": "Peringatan belum selesai per instansi", "en": "Unresolved alerts by agency"},
    "overview.latest_firings": {"id": "Peringatan terbaru", "en": "Latest firings"},
    "overview.no_firings": {"id": "Belum ada peringatan.", "en": "No firings yet."},
    "overview.devices": {"id": "Keadaan perangkat", "en": "Device states"},
    "overview.refreshed": {
        "id": "Diperbarui otomatis setiap 15 detik · terakhir {time}",
        "en": "Refreshes every 15 seconds · last at {time}",
    },
    # --- alerts ---
    "alerts.none": {"id": "Tidak ada peringatan dengan saringan ini.", "en": "No alerts match these filters."},
    "alerts.opened": {"id": "Dibuka", "en": "Opened"},
    "alerts.acknowledged": {"id": "Diterima", "en": "Acknowledged"},
    "alerts.resolved": {"id": "Diselesaikan", "en": "Resolved"},
    "alerts.flapping": {"id": "Flapping", "en": "Flapping"},
    "alerts.flapping_note": {
        "id": "Aturan ini flapping: menyala dan padam berulang kali. Aksinya ditahan sampai keadaan stabil.",
        "en": "This rule is flapping: it fired and cleared again and again. Its actions are held until it settles.",
    },
    "alerts.choose": {"id": "Pilih peringatan", "en": "Choose an alert"},
    "alerts.by_hub": {"id": "Simpul (otomatis)", "en": "Simpul (automatic)"},
    "alerts.read_only": {
        "id": "Anda hanya dapat melihat peringatan ini; menerima dan menyelesaikan perlu peran {role}.",
        "en": "You can only view this alert; acknowledging and resolving need the {role} role.",
    },
    "alerts.acknowledge": {"id": "Terima", "en": "Acknowledge"},
    "alerts.resolve": {"id": "Selesaikan", "en": "Resolve"},
    "alerts.acknowledged_ok": {"id": "Peringatan diterima.", "en": "Alert acknowledged."},
    "alerts.resolved_ok": {"id": "Peringatan diselesaikan.", "en": "Alert resolved."},
    "alerts.failed": {"id": "Tidak dapat disimpan: {detail}", "en": "Could not save: {detail}"},
    # --- dispatch ---
    "dispatch.team": {"id": "Tim", "en": "Team"},
    "dispatch.no_teams": {
        "id": "Instansi Anda belum punya tim. Tambahkan tim di config.yaml.",
        "en": "Your agencies have no teams yet. Add teams in config.yaml.",
    },
    "dispatch.overdue": {"id": "terlambat", "en": "overdue"},
    "dispatch.job_line": {
        "id": "{device} · tenggat {due} · petugas: {assignee}",
        "en": "{device} · due {due} · assignee: {assignee}",
    },
    "dispatch.open_map": {"id": "Buka peta", "en": "Open map"},
    "dispatch.update": {"id": "Perbarui tugas", "en": "Update job"},
    "dispatch.assignee": {"id": "Petugas", "en": "Assignee"},
    "dispatch.saved": {"id": "Tugas #{id} disimpan.", "en": "Job #{id} saved."},
    "dispatch.failed": {"id": "Tidak dapat disimpan: {detail}", "en": "Could not save: {detail}"},
    "dispatch.empty": {"id": "Tidak ada tugas.", "en": "No jobs."},
    # --- actions and integrations ---
    "actions.type": {"id": "Jenis", "en": "Type"},
    "actions.target": {"id": "Tujuan", "en": "Target"},
    "actions.attempts": {"id": "Percobaan", "en": "Attempts"},
    "actions.next_attempt": {"id": "Percobaan berikutnya", "en": "Next attempt"},
    "actions.last_error": {"id": "Galat terakhir", "en": "Last error"},
    "actions.none": {"id": "Tidak ada aksi dengan saringan ini.", "en": "No action runs match these filters."},
    "actions.retry_title": {"id": "Kirim ulang aksi yang mati", "en": "Send a dead run again"},
    "actions.dead_run": {"id": "Aksi yang mati", "en": "Dead run"},
    "actions.retry": {"id": "Kirim ulang", "en": "Retry"},
    "actions.retried": {"id": "Aksi #{id} masuk antrean lagi.", "en": "Run #{id} is queued again."},
    "actions.failed": {"id": "Tidak dapat dikirim ulang: {detail}", "en": "Could not retry: {detail}"},
    "actions.integrations": {"id": "Kesehatan integrasi", "en": "Integration health"},
    "actions.hub_down": {
        "id": "Hub tidak menjawab di port {port}. Jalankan hub (`make run`) untuk melihat kesehatan integrasi.",
        "en": "The hub does not answer on port {port}. Start it (`make run`) to see integration health.",
    },
    "actions.part": {"id": "Bagian", "en": "Part"},
    "actions.healthy": {"id": "Sehat", "en": "Healthy"},
    "actions.detail": {"id": "Rincian", "en": "Detail"},
    "actions.outbox": {"id": "Pekerja outbox", "en": "Outbox worker"},
    "actions.source": {"id": "Source", "en": "Source"},
    "actions.commands": {"id": "Perintah MQTT via", "en": "MQTT commands via"},
    # --- audit ---
    "audit.actions": {"id": "Jenis kejadian", "en": "Kinds of entry"},
    "audit.none": {"id": "Belum ada catatan audit.", "en": "No audit entries yet."},
    "audit.when": {"id": "Waktu", "en": "When"},
    "audit.who": {"id": "Oleh", "en": "Who"},
    "audit.what": {"id": "Kejadian", "en": "What"},
    "audit.target": {"id": "Sasaran", "en": "Target"},
    "audit.detail": {"id": "Rincian", "en": "Detail"},
    "audit.config_changes": {"id": "Perubahan konfigurasi", "en": "Config changes"},
    "audit.commit": {"id": "Commit git {commit}", "en": "Git commit {commit}"},
    "audit.action.alert_acknowledged": {"id": "Peringatan diterima", "en": "Alert acknowledged"},
    "audit.action.alert_resolved": {"id": "Peringatan diselesaikan", "en": "Alert resolved"},
    "audit.action.action_run_retried": {"id": "Aksi dikirim ulang", "en": "Action run retried"},
    "audit.action.config_reloaded": {"id": "Konfigurasi dimuat ulang", "en": "Config reloaded"},
    "audit.action.config_changed": {"id": "Konfigurasi diubah", "en": "Config changed"},
    "audit.action.job_updated": {"id": "Tugas diperbarui", "en": "Job updated"},
    "audit.action.user_created": {"id": "Akun dibuat", "en": "Account created"},
    "audit.action.user_updated": {"id": "Akun diubah", "en": "Account changed"},
    "audit.action.password_changed": {"id": "Kata sandi diganti", "en": "Password changed"},
    # --- users ---
    "users.admin_only": {
        "id": "Halaman ini untuk admin instansi.",
        "en": "This page is for agency admins.",
    },
    "users.every_agency": {"id": "Semua instansi", "en": "Every agency"},
    "users.username": {"id": "Nama pengguna", "en": "Username"},
    "users.full_name": {"id": "Nama lengkap", "en": "Full name"},
    "users.roles": {"id": "Peran", "en": "Roles"},
    "users.role": {"id": "Peran", "en": "Role"},
    "users.active": {"id": "Aktif", "en": "Active"},
    "users.add": {"id": "Tambah akun", "en": "Add an account"},
    "users.password": {"id": "Kata sandi", "en": "Password"},
    "users.password_again": {"id": "Ulangi kata sandi", "en": "Repeat the password"},
    "users.passwords_differ": {
        "id": "Kedua kata sandi berbeda; akun belum dibuat.",
        "en": "The two passwords differ; the account was not created.",
    },
    "users.create": {"id": "Buat akun", "en": "Create account"},
    "users.created": {"id": "Akun {username} dibuat.", "en": "Account {username} created."},
    "users.change": {"id": "Ubah peran atau nonaktifkan", "en": "Change roles or disable"},
    "users.no_role": {"id": "(tanpa peran)", "en": "(no role)"},
    "users.updated": {"id": "Akun {username} diubah.", "en": "Account {username} changed."},
}


def t(key: str, lang: str, default: str | None = None, **params: Any) -> str:
    """The label ``key`` in ``lang`` with ``params`` filled in; ``default`` stands in for a missing key."""
    entry = LABELS.get(key)
    if entry is None:
        if default is None:
            raise KeyError(f"no label {key!r} in ui/text.py")
        return default
    return entry[lang].format(**params) if params else entry[lang]
