"""Simpul hub: wires config, store, engine, integrations and the HTTP API together, and is the CLI.

python hub.py run     [--config PATH] [--db URL] [--host H] [--port N] [--no-simulate] [--ui [PORT]]
python hub.py check   [--config PATH] [--lang id|en]
python hub.py replay  FILE [--config PATH] [--db URL] [--source ID] [--json] [--send-actions]
python hub.py alerts  list|ack|resolve ...
python hub.py flows   diff|deploy [--folder flows]
python hub.py users   add|list|passwd|set ...
python hub.py ui      [--config PATH] [--port N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("simpul")

DEFAULT_CONFIG = "config.yaml"


def _load(config_path: str, lang: str | None = None):  # type: ignore[no-untyped-def]
    """Load the config; print every problem and carry on with the valid parts."""
    from rules.loader import load_config

    loaded = load_config(Path(config_path))
    language = lang or loaded.config.simpul.language
    for problem in loaded.problems:
        logger.error("%s", problem.format(language))
    if loaded.problems:
        logger.error(
            "%d config problems: the items above were skipped; run `python hub.py check` for details",
            len(loaded.problems),
        )
    return loaded.config


def _database_url(config_url: str, override: str | None) -> str:
    from rules.secrets import resolve_env_references

    return resolve_env_references(override or os.environ.get("SIMPUL_DATABASE_URL") or config_url)


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    """Open the store named by ``--db`` or the config, and close it afterwards."""
    from rules.store.db import connect

    config = _load(args.config)
    db = connect(_database_url(config.simpul.database, args.db))
    try:
        yield db
    finally:
        db.dispose()


def command_check(args: argparse.Namespace) -> int:
    from rules.check import run_check

    return run_check(Path(args.config), lang=args.lang)


def command_replay(args: argparse.Namespace) -> int:
    from rules.replay import ReplayError, replay_file
    from rules.store.db import connect

    config = _load(args.config)
    path = Path(args.file)
    if not path.is_file():
        print(f"error: file not found: {path}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="simpul-replay-") as scratch:
        url = args.db or f"sqlite:///{scratch}/replay.db"
        db = connect(url)
        try:
            summary = replay_file(
                path,
                config,
                db,
                source_id=args.source,
                progress=not args.json and sys.stderr.isatty(),
                send_actions=args.send_actions,
            )
        except ReplayError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        finally:
            db.dispose()

    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:  # type: ignore[type-arg]
    readings = summary["readings"]
    alerts = summary["alerts"]
    print(f"file: {summary['file']}  ({summary['seconds']} s, {summary['readings_per_second']} readings/s)")
    print(
        f"readings: {readings['total']} total, {readings['accepted']} accepted, {readings['duplicate']} duplicate, "
        f"{readings['late']} late, {readings['rejected']} rejected"
    )
    for reason, count in readings["rejected_by_reason"].items():
        print(f"  rejected {reason}: {count}")
    print(f"alerts: {alerts['opened']} opened, {alerts['resolved']} resolved, {alerts['open_at_end']} still open")
    for rule_id, count in summary["firings"].items():
        print(f"  {rule_id}: fired {count}x")
    runs = ", ".join(f"{count} {status}" for status, count in sorted(summary["action_runs"].items())) or "none"
    print(f"action runs: {runs}")


def command_alerts(args: argparse.Namespace) -> int:
    from rules.store import ops

    with _store(args) as db:
        if args.action == "list":
            print(f"{'id':>6}  {'status':<12} {'severity':<8} {'opened (UTC)':<18} rule @ device: message")
            for alert in ops.list_alerts(engine=db, status=args.status, limit=args.limit):
                print(
                    f"{alert.id:>6}  {alert.status:<12} {alert.severity:<8} {alert.opened_at:%Y-%m-%d %H:%M}Z  "
                    f"{alert.rule_id} @ {alert.device_id}: {alert.message}"
                )
            return 0
        if not args.by:
            print("error: say who you are with --by NAME; the audit log records it", file=sys.stderr)
            return 2
        step = ops.acknowledge_alert if args.action == "ack" else ops.resolve_alert
        try:
            alert = step(engine=db, alert_id=args.id, by=args.by, note=args.note)
        except (ops.AlertNotFound, ops.AlertStateError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"alert {alert.id} is now {alert.status}")
        return 0


def command_run(args: argparse.Namespace) -> int:
    from integrations.runtime import run_hub

    if not Path(args.config).is_file():
        print(f"error: config file not found: {args.config}; pass the right path with --config", file=sys.stderr)
        return 2
    config = _load(args.config)
    url = _database_url(config.simpul.database, args.db)
    pages = None
    if args.ui is not None:
        import subprocess

        command, environment = _streamlit(args.config, args.db, "127.0.0.1", args.ui)
        pages = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
        logger.info("staff pages at http://127.0.0.1:%d", args.ui)
        _tell_about_accounts(config, url)
    try:
        return run_hub(
            config,
            url,
            host=args.host,
            port=args.port,
            simulate=not args.no_simulate,
            config_path=Path(args.config),
        )
    finally:
        if pages is not None:
            pages.terminate()
            pages.wait(timeout=10)


def _tell_about_accounts(config: Any, url: str) -> None:
    from rules import users
    from rules.store.db import connect

    db = connect(url)
    try:
        if users.count_users(engine=db) == 0:
            first_agency = config.agencies[0].id if config.agencies else "AGENCY"
            logger.warning(
                "no staff accounts yet: create one to log in to the pages, e.g. "
                "python hub.py users add admin --name 'Your Name' --role '*=admin'  (or --role %s=editor)",
                first_agency,
            )
    finally:
        db.dispose()


def command_flows(args: argparse.Namespace) -> int:
    from integrations.node_red import FlowFileError, NodeRedClient, NodeRedError, NodeRedSettings, diff, load_flow_files

    folder = Path(args.folder)
    try:
        wanted = load_flow_files(folder)
    except FlowFileError as error:
        print(f"error: the flow files in {folder} are invalid, nothing was sent to Node-RED:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    settings = NodeRedSettings.from_env()
    try:
        with NodeRedClient(settings) as client:
            current, rev = client.get_flows()
            changes = diff(current, wanted)
            for line in changes.lines():
                print(line)
            if changes.is_empty:
                print(f"Node-RED at {settings.display_url} already runs the flows in {folder} (rev {rev})")
                return 0
            if args.action == "diff":
                return 0
            new_rev = client.deploy(wanted)
    except NodeRedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"deployed {len(wanted)} nodes from {folder} to Node-RED at {settings.display_url} (rev {new_rev})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub.py", description="Simpul rules and workflow hub")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the hub: HTTP API, rule engine and action workers")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: config.yaml)")
    run.add_argument("--db", help="database URL (default: simpul.database in the config, or $SIMPUL_DATABASE_URL)")
    run.add_argument("--host", help="address to listen on (default: simpul.host in the config)")
    run.add_argument("--port", type=int, help="TCP port to listen on (default: simpul.port in the config)")
    run.add_argument("--no-simulate", action="store_true", help="do not start the config's simulated sources")
    run.add_argument(
        "--ui",
        type=int,
        nargs="?",
        const=8501,
        metavar="PORT",
        help="also serve the staff pages on 127.0.0.1:PORT (default 8501)",
    )
    run.set_defaults(handler=command_run)

    check = commands.add_parser("check", help="validate the config and print every problem")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: config.yaml)")
    check.add_argument("--lang", choices=("id", "en"), help="message language (default: simpul.language, else id)")
    check.set_defaults(handler=command_check)

    replay = commands.add_parser("replay", help="replay a CSV or JSONL export through the rules")
    replay.add_argument("file", help="the export to replay")
    replay.add_argument("--config", default=DEFAULT_CONFIG, help="config with the file source and rules")
    replay.add_argument("--db", help="database URL to replay into (default: a temporary SQLite file)")
    replay.add_argument("--source", help="file source id, when the config has several")
    replay.add_argument("--json", action="store_true", help="print one JSON object with the counts")
    replay.add_argument(
        "--send-actions", action="store_true", help="deliver webhooks too (default: record them as skipped)"
    )
    replay.set_defaults(handler=command_replay)

    alerts = commands.add_parser("alerts", help="list, acknowledge or resolve alerts")
    alerts.add_argument("--config", default=DEFAULT_CONFIG)
    alerts.add_argument("--db", help="database URL (default: from the config)")
    alert_actions = alerts.add_subparsers(dest="action", required=True)
    listing = alert_actions.add_parser("list", help="list alerts, newest first")
    listing.add_argument("--status", choices=("open", "acknowledged", "resolved"))
    listing.add_argument("--limit", type=int, default=50)
    for name in ("ack", "resolve"):
        step = alert_actions.add_parser(name, help=f"{'acknowledge' if name == 'ack' else 'resolve'} an alert")
        step.add_argument("id", type=int, help="alert id")
        step.add_argument("--by", help="your name, for the audit log")
        step.add_argument("--note", help="a note stored with the alert")
    alerts.set_defaults(handler=command_alerts)

    flows = commands.add_parser(
        "flows",
        help="compare or deploy the Node-RED flow files (admin URL and login from SIMPUL_NODE_RED_* variables)",
    )
    flow_actions = flows.add_subparsers(dest="action", required=True)
    flow_help = {
        "diff": "list the nodes that a deployment would add (+), remove (-) or change (~)",
        "deploy": "replace every flow Node-RED runs with the flow files; does nothing when they match",
    }
    for name, text in flow_help.items():
        step = flow_actions.add_parser(name, help=text)
        step.add_argument("--folder", default="flows", help="folder with the *.json flow files (default: flows)")
    flows.set_defaults(handler=command_flows)

    runs = commands.add_parser("runs", help="list action runs, or retry a dead one")
    runs.add_argument("--config", default=DEFAULT_CONFIG)
    runs.add_argument("--db", help="database URL (default: from the config)")
    run_actions = runs.add_subparsers(dest="action", required=True)
    run_listing = run_actions.add_parser("list", help="list action runs, newest first")
    run_listing.add_argument("--status", choices=("pending", "succeeded", "failed", "dead", "held", "skipped"))
    run_listing.add_argument("--limit", type=int, default=50)
    retry = run_actions.add_parser("retry", help="send a dead run again")
    retry.add_argument("id", type=int, help="action run id")
    retry.add_argument("--by", help="your name, for the audit log")
    runs.set_defaults(handler=command_runs)

    jobs = commands.add_parser("jobs", help="list dispatch jobs, newest first")
    jobs.add_argument("--config", default=DEFAULT_CONFIG)
    jobs.add_argument("--db", help="database URL (default: from the config)")
    jobs.add_argument("--status", choices=("new", "assigned", "in_progress", "done", "cancelled"))
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(handler=command_jobs)
    _add_user_commands(commands)
    return parser


def _add_user_commands(commands: Any) -> None:
    users = commands.add_parser("users", help="manage the staff accounts of the pages")
    users.add_argument("--config", default=DEFAULT_CONFIG)
    users.add_argument("--db", help="database URL (default: from the config)")
    actions = users.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list the accounts")
    role_help = "a role in an agency as AGENCY=ROLE (viewer, operator, editor, admin); * is every agency"
    add = actions.add_parser("add", help="create an account; the password is asked for twice")
    add.add_argument("username")
    add.add_argument("--name", help="full name, shown in the pages and in git commits")
    add.add_argument("--role", action="append", required=True, help=role_help)
    add.add_argument("--password-env", help="read the password from this environment variable instead")
    passwd = actions.add_parser("passwd", help="set a new password")
    passwd.add_argument("username")
    passwd.add_argument("--password-env", help="read the password from this environment variable instead")
    change = actions.add_parser("set", help="replace an account's roles, or disable it")
    change.add_argument("username")
    change.add_argument("--role", action="append", required=True, help=role_help)
    change.add_argument("--disable", action="store_true", help="block logging in with this account")
    users.set_defaults(handler=command_users)

    ui = commands.add_parser("ui", help="start the staff pages (Streamlit)")
    ui.add_argument("--config", default=DEFAULT_CONFIG)
    ui.add_argument("--db", help="database URL (default: from the config)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8501, help="TCP port (default: 8501)")
    ui.set_defaults(handler=command_ui)


def command_runs(args: argparse.Namespace) -> int:
    from rules.store import ops

    with _store(args) as db:
        if args.action == "list":
            print(f"{'id':>6}  {'status':<10} {'type':<14} {'attempts':>8}  rule @ device -> target: last error")
            for run in ops.list_action_runs(engine=db, status=args.status, limit=args.limit):
                print(
                    f"{run.id:>6}  {run.status:<10} {run.type:<14} {run.attempts:>8}  "
                    f"{run.rule_id} @ {run.device_id} -> {run.target or '-'}: {run.last_error or ''}"
                )
            return 0
        if not args.by:
            print("error: say who you are with --by NAME; the audit log records it", file=sys.stderr)
            return 2
        try:
            ops.retry_dead_run(engine=db, run_id=args.id, by=args.by)
        except (LookupError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"action run {args.id} is pending again")
        return 0


def command_jobs(args: argparse.Namespace) -> int:
    from rules.store import ops

    with _store(args) as db:
        print(f"{'id':>6}  {'status':<12} {'team':<20} {'due (UTC)':<20}  device: title")
        for job in ops.list_dispatch_jobs(engine=db, status=args.status, limit=args.limit):
            print(
                f"{job.id:>6}  {job.status:<12} {job.team_id:<20} due {job.due_at:%Y-%m-%d %H:%M}Z  "
                f"{job.device_id or '-'}: {job.title}"
            )
        return 0


def _read_password(variable: str | None) -> str | None:
    """Read the new password from the environment variable ``variable``, or ask for it twice at a prompt."""
    import getpass

    if variable:
        value = os.environ.get(variable)
        if not value:
            print(f"error: the environment variable {variable} is not set or empty", file=sys.stderr)
            return None
        return value
    if not sys.stdin.isatty():
        print(
            "error: no terminal to type the password in; set one with --password-env VARIABLE instead", file=sys.stderr
        )
        return None
    first = getpass.getpass("New password: ")
    repeated = getpass.getpass("Repeat the password: ")
    if repeated != first:
        print("error: the two passwords differ; nothing was changed", file=sys.stderr)
        return None
    return first


def _parse_roles(values: list[str]) -> dict[str, str] | None:
    roles = {}
    for value in values:
        agency_id, separator, role = value.partition("=")
        if not separator or not agency_id or not role:
            print(f"error: --role {value!r} is not AGENCY=ROLE, e.g. --role dinas-sda=operator", file=sys.stderr)
            return None
        roles[agency_id.strip()] = role.strip()
    return roles


def command_users(args: argparse.Namespace) -> int:
    from rules import users
    from rules.i18n import translate
    from rules.store.db import connect

    config = _load(args.config)
    agencies = [agency.id for agency in config.agencies]
    actor = os.environ.get("USER") or "cli"
    db = connect(_database_url(config.simpul.database, args.db))
    try:
        if args.action == "list":
            print(f"{'username':<20} {'active':<7} {'name':<30} roles")
            for user in users.list_users(engine=db):
                roles = ", ".join(f"{agency}={role}" for agency, role in sorted(user.roles.items()))
                print(f"{user.username:<20} {'yes' if user.active else 'no':<7} {user.full_name:<30} {roles}")
            return 0

        roles = _parse_roles(args.role or [])
        if roles is None:
            return 2
        if args.action == "set":
            staff = users.update_user(
                engine=db, username=args.username, roles=roles, active=not args.disable, agencies=agencies, by=actor
            )
            print(f"account {staff.username} updated")
            return 0

        password = _read_password(args.password_env)
        if password is None:
            return 2
        if args.action == "add":
            users.create_user(
                engine=db,
                username=args.username,
                full_name=args.name or args.username,
                password=password,
                roles=roles,
                agencies=agencies,
                by=actor,
            )
            print(f"account {args.username} created")
        else:
            users.set_password(engine=db, username=args.username, password=password, by=actor)
            print(f"password of {args.username} changed")
        return 0
    except users.AccountError as error:
        print(f"error: {translate(error.code, config.simpul.language, **error.params)}", file=sys.stderr)
        return 1
    finally:
        db.dispose()


def _streamlit(config_path: str, db: str | None, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """Build the command line and environment that run the staff pages on ``host:port``."""
    environment = {**os.environ, "SIMPUL_CONFIG": str(Path(config_path).resolve())}
    if db:
        environment["SIMPUL_DATABASE_URL"] = db
    app = Path(__file__).resolve().parent / "ui" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host]
    command += ["--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # Staff see the pages only, without Streamlit's deploy and developer menu entries.
    command += ["--client.toolbarMode", "viewer"]
    return command, environment


def command_ui(args: argparse.Namespace) -> int:
    """Run the staff pages with Streamlit in this process's place."""
    command, environment = _streamlit(args.config, args.db, args.host, args.port)
    logger.info("staff pages at http://%s:%d", args.host, args.port)
    os.execve(sys.executable, command, environment)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return int(args.handler(args))


if __name__ == "__main__":
    # Exit quietly when the output pipe closes early, e.g. `hub.py alerts list | head`.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
