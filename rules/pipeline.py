"""The data path: normalise -> store -> evaluate -> alerts and action runs, one transaction per batch.

A batch's readings, the instance state changes they cause, the alerts they open or resolve and
the action runs they create are committed together, and only then are results returned to the
sender. A crash before the commit loses the whole batch (the sender has no acknowledgement and
sends again); a crash after it loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Engine as DbEngine
from sqlmodel import Session

from rules.compile import CompiledRule
from rules.config import Action, CommandAction, Config, Device, HomeAssistantAction
from rules.durable import DurableMatcher
from rules.engine import Engine, Firing, NormalReading, Settled
from rules.normalize import Normalizer, Rejection
from rules.readings import RawReading, ReadingResult
from rules.store import ops
from rules.store.db import checkpoint_wal
from rules.store.models import utc_now
from rules.templates import render

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class _AlertDraft:
    row: dict[str, Any]
    fields: dict[str, Any]
    message: str


@dataclass
class Tally:
    """Counts kept while a pipeline runs; replay prints them."""

    readings: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    firings: Counter[str] = field(default_factory=Counter)
    opened: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Runs batches of raw readings through normalisation, the store and the engine.

    ``event_clock=True`` (replay) moves the clock to each reading's event time; otherwise the
    clock is the wall clock, moved by ``tick``. ``send_actions=False`` records outbox runs as
    skipped instead of pending, so a replay of history calls no outside system.
    """

    def __init__(
        self,
        config: Config,
        db: DbEngine,
        *,
        event_clock: bool,
        send_actions: bool = True,
        matcher: DurableMatcher | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.event_clock = event_clock
        self.send_actions = send_actions
        self.matcher = matcher or DurableMatcher()
        self.normalizer = Normalizer(config)
        self.tally = Tally()
        self.lock = threading.Lock()
        self.source_zones = {source.id: getattr(source, "timezone", None) for source in config.sources}
        self.teams = {team.id: agency.id for agency in config.agencies for team in agency.teams}
        self._store_thread = _store_thread(db)
        self._checkpoint: Future[None] | None = None
        self._checkpoint_due = 0.0
        self._written_since_checkpoint = 0
        self.engine = self._load_engine()

    # --- start-up ----------------------------------------------------------------------------

    def _load_engine(self) -> Engine:
        engine = Engine(self.config, self.matcher)
        saved = ops.load_instances(engine=self.db)
        stale = engine.restore(saved)
        latest = ops.load_latest_values(engine=self.db)
        newest = max((ts for ts, _value in latest.values()), default=None)
        history = ops.load_history(engine=self.db, keys=engine.history_window, until=newest) if newest else []
        engine.seed(latest=latest, history=history)
        self.newest = {key: ts for key, (ts, _value) in latest.items()}
        if stale:
            self._retire(stale)
        if newest is not None:
            engine.start_clock(newest if self.event_clock else max(newest, utc_now()))
        elif not self.event_clock:
            engine.start_clock(utc_now())
        logger.info(
            "engine loaded: %d rules, %d instances, %d restored from the store",
            len(engine.rules),
            len(engine.instances),
            len(saved) - len(stale),
        )
        return engine

    def _retire(self, stale: Sequence[Any]) -> None:
        """Resolve the open alerts of instances whose rule changed or was removed."""
        now = utc_now()
        with Session(self.db) as session:
            for instance in stale:
                if instance.open_alert_id is not None:
                    ops.resolve_alert_in(
                        session=session,
                        alert_id=instance.open_alert_id,
                        at=now,
                        by="simpul",
                        note="rule changed or removed",
                    )
            ops.delete_instances(session=session, keys=[(i.rule_id, i.device_id) for i in stale])
            session.commit()
        logger.info("reset %d rule instances whose rule changed or was removed", len(stale))

    def reload(self, config: Config) -> None:
        """Switch to a new config without a restart.

        Instance state is saved with every batch, so the new engine restores it from the store:
        rules whose definition did not change keep their state, changed or removed rules are reset
        and their open alerts resolved.
        """
        with self.lock:
            self.config = config
            self.normalizer = Normalizer(config)
            self.source_zones = {source.id: getattr(source, "timezone", None) for source in config.sources}
            self.teams = {team.id: agency.id for agency in config.agencies for team in agency.teams}
            self.engine = self._load_engine()

    # --- batches -----------------------------------------------------------------------------

    def process(
        self, source_id: str, raws: Sequence[RawReading], *, now: datetime | None = None
    ) -> list[ReadingResult]:
        """Store and evaluate a batch; return one result per raw reading, in order."""
        with self.lock:
            try:
                return self._process(source_id, raws, now)
            except Exception:
                logger.exception("batch from source %s failed; reloading engine state from the store", source_id)
                self.engine = self._load_engine()
                raise

    def _process(self, source_id: str, raws: Sequence[RawReading], now: datetime | None) -> list[ReadingResult]:
        received = now or utc_now()
        zone = self.source_zones.get(source_id)
        future_check = None if self.event_clock else received
        results: list[ReadingResult | None] = [None] * len(raws)
        accepted: list[tuple[int, NormalReading]] = []
        rejected_rows: list[dict[str, Any]] = []
        seen_uids: set[str] = set()
        seen_keys: set[tuple[str, str, datetime]] = set()
        duplicates = 0

        # 1. Normalise, and drop duplicates inside the batch itself.
        for index, raw in enumerate(raws):
            outcome = self.normalizer.normalize(raw, source_id=source_id, zone=zone, now=future_check)
            if isinstance(outcome, Rejection):
                results[index] = ReadingResult("rejected", raw.id, outcome.reason, outcome.detail)
                rejected_rows.append(_rejected_row(outcome, source_id, received))
                self.tally.rejected[outcome.reason] += 1
                continue
            key = (outcome.device_id, outcome.metric, outcome.ts)
            if key in seen_keys or (outcome.uid is not None and outcome.uid in seen_uids):
                results[index] = ReadingResult("duplicate", outcome.uid)
                duplicates += 1
                continue
            if outcome.uid is not None:
                seen_uids.add(outcome.uid)
            seen_keys.add(key)
            accepted.append((index, outcome))

        with self.db.begin() as session:
            # 2. Find duplicates of stored readings. A reading newer than the newest stored one
            #    of its device and metric cannot collide on (device, metric, ts), so only older
            #    readings and sender ids are looked up.
            lookup_uids = [r.uid for _i, r in accepted if r.uid is not None]
            lookup_keys = [
                (r.device_id, r.metric, r.ts)
                for _i, r in accepted
                if (newest := self.newest.get((r.device_id, r.metric))) is not None and r.ts <= newest
            ]
            stored_uids, stored_keys = ops.find_stored_readings(session=session, uids=lookup_uids, keys=lookup_keys)

            # 3. Evaluate new readings in order; older than the newest of their metric is late.
            #    Rows go to the store in chunks while the engine evaluates the next readings.
            late = 0
            with _ReadingWriter(session, self._store_thread) as writer:
                new_rows = []
                for index, reading in accepted:
                    key = (reading.device_id, reading.metric)
                    if reading.uid in stored_uids or (stored_keys and (*key, reading.ts) in stored_keys):
                        results[index] = ReadingResult("duplicate", reading.uid)
                        duplicates += 1
                        continue
                    newest = self.newest.get(key)
                    is_late = newest is not None and reading.ts < newest
                    new_rows.append(_reading_row(reading, received, is_late))
                    if len(new_rows) == _ROWS_PER_WRITE:
                        writer.insert(new_rows)
                        new_rows = []
                    if is_late:
                        late += 1
                        results[index] = ReadingResult("accepted", reading.uid, late=True)
                        continue
                    self.newest[key] = reading.ts
                    self.engine.advance(
                        reading.ts if self.event_clock else max(received, self.engine.clock or received)
                    )
                    self.engine.evaluate(reading)
                    results[index] = _ACCEPTED if reading.uid is None else ReadingResult("accepted", reading.uid)
                writer.insert(new_rows)

            # 4. Readings, alerts, action runs and instance state, in one transaction.
            ops.insert_rejected(session=session, rows=rejected_rows)
            self._apply_effects(session, received)

        self._start_checkpoint(len(raws) - duplicates)
        self.tally.readings["accepted"] += len(raws) - len(rejected_rows) - duplicates
        self.tally.readings["duplicate"] += duplicates
        self.tally.readings["late"] += late
        self.tally.readings["rejected"] += len(rejected_rows)
        if rejected_rows:
            logger.debug("source %s: %d readings rejected", source_id, len(rejected_rows))
        return [result for result in results if result is not None]

    def _start_checkpoint(self, written: int) -> None:
        """Start a WAL checkpoint on the store thread once enough rows were written since the last.

        Commits then rarely copy the WAL themselves. The next batch's inserts wait behind the
        checkpoint on the store thread, while the engine evaluates that batch.
        """
        self._written_since_checkpoint += written
        running = self._checkpoint is not None and not self._checkpoint.done()
        if self._store_thread is None or running or self._written_since_checkpoint < _CHECKPOINT_AFTER_ROWS:
            return
        started = time.monotonic()
        if started < self._checkpoint_due:
            return
        self._checkpoint_due = started + _CHECKPOINT_INTERVAL_SECONDS
        self._written_since_checkpoint = 0
        self._checkpoint = self._store_thread.submit(checkpoint_wal, self.db)

    def tick(self, now: datetime) -> None:
        """Move the clock to ``now`` and commit whatever deadlines fire."""
        with self.lock:
            self.engine.advance(now)
            if not self.engine.effects and not self.engine.dirty:
                return
            with self.db.begin() as connection:
                self._apply_effects(connection, utc_now())

    # --- effects -----------------------------------------------------------------------------

    def _apply_effects(self, session: Connection, now: datetime) -> None:
        """Write the batch's firings and resolutions with a handful of statements, in effect order.

        Alerts are inserted together first, so every firing has its alert id before a later
        resolution in the same batch refers to it.
        """
        effects = self.engine.take_effects()
        firings = [effect for effect in effects if isinstance(effect, Firing)]
        drafts = [self._draft_alert(firing) for firing in firings]
        alert_ids = iter(ops.open_alerts(session=session, rows=[draft.row for draft in drafts]))
        draft_by_firing = {id(firing): draft for firing, draft in zip(firings, drafts, strict=True)}

        runs: list[dict[str, Any]] = []
        jobs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        to_resolve: list[tuple[int, datetime, str]] = []
        settled: list[Settled] = []
        for effect in effects:
            if isinstance(effect, Firing):
                alert_id = next(alert_ids)
                effect.instance.open_alert_id = alert_id
                self._on_firing(effect, draft_by_firing[id(effect)], alert_id, now, runs, jobs)
                continue
            if isinstance(effect, Settled):
                settled.append(effect)
                continue
            # The engine may have produced this resolution before the firing's alert had an id.
            # Effects are applied in order, so the instance carries that id by now.
            alert_id = effect.alert_id if effect.alert_id is not None else effect.instance.open_alert_id
            effect.instance.open_alert_id = None
            if alert_id is not None:
                to_resolve.append((alert_id, effect.at, effect.rule.id))

        job_ids = ops.add_dispatch_jobs(session=session, rows=[job for job, _run in jobs])
        for (_job, run), job_id in zip(jobs, job_ids, strict=True):
            run["target"] = f"dispatch_job:{job_id}"
        ops.add_action_runs(session=session, rows=runs)
        self._resolve(session, to_resolve)
        for effect in settled:
            self._release_held(session, effect, now)
        ops.save_instances(session=session, instances=self.engine.take_dirty(), now=now)

    def _release_held(self, session: Connection, settled: Settled, now: datetime) -> None:
        """Run what a flapping instance held, now that it is stable.

        Runs of alerts that are still open (or acknowledged) run now: webhooks go back to the
        outbox, dispatch jobs and log lines are made here. Runs of alerts that were resolved in
        the meantime are skipped, since their notification no longer applies.
        """
        rule = settled.rule
        device = self.engine.devices[settled.instance.device_id]
        updates: list[dict[str, Any]] = []
        jobs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for held in ops.held_runs(session=session, rule_id=rule.id, device_id=device.id):
            update: dict[str, Any] = {
                "run_id": held.id,
                "status": ops.RUN_SKIPPED,
                "target": held.target,
                "attempts": 0,
                "next_attempt_at": None,
                "finished_at": now,
            }
            updates.append(update)
            if held.alert_status == ops.ALERT_RESOLVED:
                continue
            action = rule.rule.then[held.action_index]
            fields = self._fields(rule, device, held.alert_value, rule.metric, held.opened_at)
            if _remote_target(action) is not None:
                update.update(status=ops.RUN_PENDING, next_attempt_at=now, finished_at=None)
            elif action.dispatch is not None:
                update.update(status=ops.RUN_SUCCEEDED, attempts=1)
                job = self._job_row(rule, device, action.dispatch, fields, held.alert_id, settled.at, now)
                jobs.append((job, update))
            elif action.log is not None:
                update.update(status=ops.RUN_SUCCEEDED, attempts=1)
                text = render(action.log.message, fields)
                logger.info("rule %s device %s log action (released after flapping): %s", rule.id, device.id, text)

        job_ids = ops.add_dispatch_jobs(session=session, rows=[job for job, _update in jobs])
        for (_job, update), job_id in zip(jobs, job_ids, strict=True):
            update["target"] = f"dispatch_job:{job_id}"
        ops.update_runs(session=session, rows=updates)
        logger.info(
            "rule %s device %s is stable again since %s: %d held runs released or skipped",
            rule.id,
            device.id,
            settled.at.isoformat(),
            len(updates),
        )

    def _draft_alert(self, firing: Firing) -> _AlertDraft:
        rule = firing.rule.rule
        fields = self._template_fields(firing)
        alert_action = next((action.alert for action in rule.then if action.alert is not None), None)
        value_text = None if firing.value is None else _format_value(firing.value)
        message = render(alert_action.message, fields) if alert_action else f"{rule.name}: {value_text or '-'}"
        row = {
            "rule_id": rule.id,
            "rule_name": rule.name,
            "device_id": firing.device.id,
            "agency_id": rule.agency,
            "severity": rule.severity,
            "status": ops.ALERT_OPEN,
            "message": message,
            "value": value_text,
            "flapping": firing.flapping,
            "opened_at": firing.at,
        }
        return _AlertDraft(row, fields, message)

    def _on_firing(
        self,
        firing: Firing,
        draft: _AlertDraft,
        alert_id: int,
        now: datetime,
        runs: list[dict[str, Any]],
        jobs: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        rule = firing.rule.rule
        self.tally.firings[rule.id] += 1
        self.tally.opened[rule.id] += 1
        logger.info(
            "rule %s fired on device %s at %s: alert %d%s",
            rule.id,
            firing.device.id,
            firing.at.isoformat(),
            alert_id,
            " (flapping: notifications held)" if firing.flapping else "",
        )

        for index, action in enumerate(rule.then):
            run: dict[str, Any] = {
                "alert_id": alert_id,
                "rule_id": rule.id,
                "device_id": firing.device.id,
                "action_index": index,
                "type": action.type,
                "target": None,
                "payload": {},
                "status": ops.RUN_SUCCEEDED,
                "attempts": 1,
                "last_error": None,
                "created_at": now,
                "next_attempt_at": None,
                "finished_at": now,
            }
            if action.alert is not None:
                run["target"] = f"alert:{alert_id}"
            elif firing.flapping:
                # Released (or skipped) when the instance is stable again; see _release_held.
                run.update(status=ops.RUN_HELD, attempts=0, finished_at=None)
                run["target"] = _remote_target(action)
                if action.webhook is not None or action.node_red is not None:
                    template = action.webhook.message if action.webhook is not None else None
                    run["payload"] = _webhook_body(firing, alert_id, draft.message, draft.fields, template)
                elif action.command is not None or action.home_assistant is not None:
                    run["payload"] = self._call_payload(action, draft.fields)
            elif action.log is not None:
                text = render(action.log.message, draft.fields)
                run["payload"] = {"message": text}
                logger.info("rule %s device %s log action: %s", rule.id, firing.device.id, text)
            elif action.dispatch is not None:
                job = self._job_row(firing.rule, firing.device, action.dispatch, draft.fields, alert_id, firing.at, now)
                jobs.append((job, run))
            elif action.webhook is not None or action.node_red is not None:
                template = action.webhook.message if action.webhook is not None else None
                run["target"] = _remote_target(action)
                run["payload"] = _webhook_body(firing, alert_id, draft.message, draft.fields, template)
                run["status"] = self._remote_status(firing)
                run["attempts"] = 0
                run["finished_at"] = None
                run["next_attempt_at"] = now
            elif action.command is not None or action.home_assistant is not None:
                run["target"] = _remote_target(action)
                run["payload"] = self._call_payload(action, draft.fields)
                run["status"] = self._remote_status(firing)
                run["attempts"] = 0
                run["finished_at"] = None
                run["next_attempt_at"] = now
            runs.append(run)

    def _resolve(self, session: Connection, to_resolve: list[tuple[int, datetime, str]]) -> None:
        still_open = ops.unresolved_alert_ids(session=session, ids=[alert_id for alert_id, _at, _rule in to_resolve])
        rows = []
        for alert_id, at, rule_id in to_resolve:
            if alert_id not in still_open:
                continue
            still_open.discard(alert_id)
            rows.append({"alert_id": alert_id, "at": at})
            self.tally.resolved[rule_id] += 1
            logger.info("rule %s cleared at %s: alert %d resolved", rule_id, at.isoformat(), alert_id)
        ops.resolve_alerts(session=session, rows=rows, by="simpul", note="condition cleared")

    def _call_payload(self, action: Action, fields: dict[str, Any]) -> dict[str, Any]:
        """Build the payload of a ``command`` or ``home_assistant`` run."""
        if action.home_assistant is not None:
            return _service_call_payload(action.home_assistant, fields)
        assert action.command is not None, f"action {action.type} is neither a command nor a service call"
        return self._command_payload(action.command, fields)

    def _command_payload(self, command: CommandAction, fields: dict[str, Any]) -> dict[str, Any]:
        """Build the MQTT message of a command run from the commanded device's ``commands``.

        The topic and payload templates see the firing's fields, with ``device`` set to the
        commanded device. The config loader checks that the device, its commands and the
        payload exist, so a missing one here is a bug.
        """
        device = self.engine.devices[command.device]
        commands = device.commands
        assert commands is not None, f"device {device.id} has no commands"
        command_fields = {**fields, "device": _device_fields(device)}
        return {
            "via": commands.via,
            "device": device.id,
            "command": command.action,
            "topic": render(commands.topic, command_fields),
            "payload": render(commands.payloads[command.action], command_fields),
            "qos": commands.qos,
            "retain": commands.retain,
        }

    def _remote_status(self, firing: Firing) -> str:
        if not self.send_actions:
            return ops.RUN_SKIPPED
        if firing.flapping:
            return ops.RUN_HELD
        return ops.RUN_PENDING

    def _job_row(
        self,
        rule: CompiledRule,
        device: Device,
        spec: Any,
        fields: dict[str, Any],
        alert_id: int,
        start: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        """Build a dispatch job due ``spec.due`` after ``start`` (the firing, or the release)."""
        location = device.location
        return {
            "action_run_id": None,
            "alert_id": alert_id,
            "agency_id": self.teams.get(spec.team, rule.rule.agency),
            "team_id": spec.team,
            "device_id": device.id,
            "title": render(spec.title, fields),
            "lat": location.lat if location else None,
            "lon": location.lon if location else None,
            "status": "new",
            "assignee": None,
            "due_at": start + spec.due,
            "created_at": now,
            "updated_at": now,
        }

    def _template_fields(self, firing: Firing) -> dict[str, Any]:
        return self._fields(firing.rule, firing.device, firing.value, firing.metric, firing.at)

    def _fields(
        self, rule: CompiledRule, device: Device, value: object, metric: str | None, at: datetime
    ) -> dict[str, Any]:
        metric_unit = None
        kind = self.config.kinds.get(device.kind)
        if kind is not None and metric is not None and metric in kind.metrics:
            metric_unit = kind.metrics[metric].unit
        local = at.astimezone(_zone_info(rule.zone))
        return {
            "value": value if value is not None else "-",
            "unit": metric_unit or "",
            "metric": metric or "",
            "ts": local.strftime("%Y-%m-%d %H:%M %Z"),
            "device": _device_fields(device),
            "rule": {"id": rule.rule.id, "name": rule.rule.name, "severity": rule.rule.severity},
        }


def _zone_info(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _device_fields(device: Device) -> dict[str, Any]:
    location = device.location
    return {
        "id": device.id,
        "name": device.name,
        "kind": device.kind,
        "agency": device.agency,
        "attributes": dict(device.attributes),
        "location": {"lat": location.lat, "lon": location.lon} if location else {},
    }


def _remote_target(action: Action) -> str | None:
    """Return the run target of an action that the outbox sends: a webhook target id, a Node-RED
    path, the id of the commanded device or ``<source>:<service>`` of a Home Assistant call.
    Actions that the pipeline carries out itself have none."""
    if action.webhook is not None:
        return action.webhook.target
    if action.node_red is not None:
        return action.node_red.path
    if action.command is not None:
        return action.command.device
    if action.home_assistant is not None:
        return f"{action.home_assistant.source}:{action.home_assistant.service}"
    return None


def _service_call_payload(call: HomeAssistantAction, fields: dict[str, Any]) -> dict[str, Any]:
    """Build the Home Assistant service call of a ``home_assistant`` run, its entity ids and data rendered."""
    domain, service = call.domain_and_service
    payload: dict[str, Any] = {"source": call.source, "domain": domain, "service": service}
    if call.entity_id is not None:
        payload["target"] = {"entity_id": _render_all(call.entity_id, fields)}
    if call.data:
        payload["service_data"] = _render_all(call.data, fields)
    return payload


def _render_all(value: Any, fields: dict[str, Any]) -> Any:
    """Render every text inside nested mappings and lists; numbers, booleans and null stay as they are."""
    if isinstance(value, str):
        return render(value, fields)
    if isinstance(value, dict):
        return {key: _render_all(item, fields) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_all(item, fields) for item in value]
    return value


def _webhook_body(
    firing: Firing, alert_id: int, message: str, fields: dict[str, Any], template: str | None
) -> dict[str, Any]:
    return {
        "event": "firing",
        "alert_id": alert_id,
        "rule": fields["rule"],
        "device": fields["device"],
        "metric": firing.metric,
        "value": firing.value,
        "at": firing.at.isoformat(),
        "severity": firing.rule.rule.severity,
        "message": render(template, fields) if template else message,
    }


def _format_value(value: float | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# A WAL checkpoint on SQLite starts after this many rows (readings and rejected readings), and
# at least this long after the previous one. A batch of 2000 readings of the replay benchmark
# wrote about 400 WAL pages of 4 KiB.
_CHECKPOINT_AFTER_ROWS = 2000
_CHECKPOINT_INTERVAL_SECONDS = 0.25
# Readings per insert handed to the store thread while the engine evaluates the next ones.
_ROWS_PER_WRITE = 500
# The result of most readings: accepted, in order, without a sender id.
_ACCEPTED = ReadingResult("accepted")


def _store_thread(db: DbEngine) -> ThreadPoolExecutor | None:
    """Return a thread for inserting readings on a SQLite file database, or None to insert inline.

    sqlite3 releases the GIL while SQLite runs a statement, so the inserts of one chunk run on a
    second core while the engine evaluates the next chunk. An in-memory database has one
    connection per thread, so it inserts inline.
    """
    # NOTE: PostgreSQL inserts inline too, because the overlap was only measured on SQLite.
    if db.dialect.name != "sqlite" or db.url.database in (None, "", ":memory:"):
        return None
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="simpul-store")


class _ReadingWriter:
    """Inserts a batch's readings in chunks, in order, on the store thread when there is one.

    Leaving the ``with`` block waits for every chunk, so the transaction is never used by two
    threads at once, and raises the first failed insert unless the block itself raised.
    """

    def __init__(self, session: Connection, thread: ThreadPoolExecutor | None) -> None:
        self.session = session
        self.thread = thread
        self.pending: list[Future[None]] = []

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.thread is None:
            ops.insert_readings(session=self.session, rows=rows)
            return
        self.pending.append(self.thread.submit(ops.insert_readings, session=self.session, rows=rows))

    def __enter__(self) -> _ReadingWriter:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_details: object) -> None:
        failures = [error for future in self.pending if (error := future.exception()) is not None]
        self.pending = []
        if failures and error_type is None:
            raise failures[0]


def _reading_row(reading: NormalReading, received: datetime, late: bool) -> dict[str, Any]:
    numeric = not isinstance(reading.value, str)
    return {
        "uid": reading.uid,
        "device_id": reading.device_id,
        "metric": reading.metric,
        "value_num": reading.value if numeric else None,
        "value_text": None if numeric else reading.value,
        "unit": reading.unit,
        "ts": reading.ts,
        "received_at": received,
        "source_id": reading.source_id,
        "late": late,
    }


def _rejected_row(rejection: Rejection, source_id: str, received: datetime) -> dict[str, Any]:
    raw = rejection.raw
    return {
        "source_id": source_id,
        "device_id": _clip(raw.device, 200),
        "metric": _clip(raw.metric, 200),
        "raw_value": _clip(raw.value, 500),
        "raw_ts": _clip(raw.ts.isoformat() if isinstance(raw.ts, datetime) else raw.ts, 100),
        "reason": rejection.reason,
        "detail": _clip(rejection.detail, 500),
        "received_at": received,
    }


def _clip(value: object, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
