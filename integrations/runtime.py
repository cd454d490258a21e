"""Start and stop the live hub: store, pipeline, ingestion thread, outbox worker, sources, HTTP API."""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import Engine

from integrations.action_health import ReportingExecutor
from integrations.base import Stop
from integrations.home_assistant import HomeAssistantExecutor, HomeAssistantFeed
from integrations.http_api import create_app
from integrations.mqtt import MqttCommandExecutor, MqttFeed
from integrations.node_red import NodeRedExecutor, NodeRedSettings
from integrations.simulated import SimulatedFeed
from integrations.webhook_out import WebhookExecutor
from rules.config import Config, HomeAssistantSource, MqttSource, SimulatedSource
from rules.ingest import Ingestor
from rules.loader import load_config
from rules.outbox import OutboxWorker
from rules.pipeline import Pipeline
from rules.secrets import MissingSecret
from rules.store import ops
from rules.store.db import connect

logger = logging.getLogger(__name__)


def run_hub(
    config: Config,
    database_url: str,
    *,
    host: str | None,
    port: int | None,
    simulate: bool,
    config_path: Path | None = None,
) -> int:
    """Run the hub until interrupted; return the process exit code. SIGHUP reloads ``config_path``."""
    db = connect(database_url)
    pipeline = Pipeline(config, db, event_clock=False)
    ingestor = Ingestor(pipeline)
    ingestor.start()
    webhooks = WebhookExecutor({target.id: target for target in config.webhooks})
    node_red = NodeRedExecutor(NodeRedSettings.from_env())
    # These two open a request per attempt, so their health is what the latest attempts found.
    http_actions = {"webhook": ReportingExecutor(webhooks), "node_red": ReportingExecutor(node_red)}
    commands = MqttCommandExecutor(source for source in config.sources if isinstance(source, MqttSource))
    service_calls = HomeAssistantExecutor(
        source for source in config.sources if isinstance(source, HomeAssistantSource)
    )
    worker = OutboxWorker(db, {**http_actions, "command": commands, "home_assistant": service_calls})
    worker.start()

    feeds: list[SimulatedFeed | MqttFeed | HomeAssistantFeed] = []
    stops: list[Stop] = []
    for source in config.sources:
        feed: SimulatedFeed | MqttFeed | HomeAssistantFeed
        if isinstance(source, SimulatedSource) and simulate:
            feed = SimulatedFeed(source, config)
        elif isinstance(source, MqttSource):
            try:
                feed = MqttFeed(source, config)
            except MissingSecret as error:
                logger.error("mqtt source %s not started: %s", source.id, error)
                continue
        elif isinstance(source, HomeAssistantSource):
            try:
                feed = HomeAssistantFeed(source, config)
            except MissingSecret as error:
                logger.error("home_assistant source %s not started: %s", source.id, error)
                continue
        else:
            continue
        feeds.append(feed)
        stops.append(feed.start(ingestor.submit))

    def health() -> dict[str, Any]:
        return {
            "rules": len(pipeline.engine.rules),
            "instances": len(pipeline.engine.instances),
            "outbox": worker.health(),
            "actions": {
                **{action_type: executor.health() for action_type, executor in http_actions.items()},
                "home_assistant": service_calls.health(),
            },
            "commands": commands.health(),
            "sources": {feed.id: feed.health() for feed in feeds},
        }

    if config_path is not None:

        def use_config(new: Config) -> None:
            pipeline.reload(new)
            webhooks.targets = {target.id: target for target in new.webhooks}
            commands.use_sources(source for source in new.sources if isinstance(source, MqttSource))
            service_calls.use_sources(source for source in new.sources if isinstance(source, HomeAssistantSource))

        watcher = ConfigWatcher(config_path, lambda: _reload(use_config, db, config_path))
        stops.append(watcher.start())
        signal.signal(signal.SIGHUP, lambda _signum, _frame: watcher.request_reload())

    app = create_app(config=config, ingestor=ingestor, db=db, health=health)
    bind_host = host or config.simpul.host
    bind_port = port or config.simpul.port
    logger.info("Simpul hub listening on http://%s:%d (API docs at /docs)", bind_host, bind_port)
    # uvicorn restores this handler when it shuts down and then raises the signal again; with
    # the default handler SIGTERM would end the process before the workers below are stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")
    finally:
        _stop_all(
            [
                *stops,
                worker.stop,
                webhooks.close,
                node_red.close,
                commands.close,
                service_calls.close,
                ingestor.stop,
                db.dispose,
            ]
        )
        logger.info("Simpul hub stopped")
    return 0


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _reload(use_config: Callable[[Config], None], db: Engine, config_path: Path) -> None:
    """Load the config again and switch the pipeline and the action executors to it, unless the file
    has problems.

    NOTE: sources that a reload adds, changes or removes do not start or stop their feeds. The
    hub reads mqtt and home_assistant sources for readings as they were when it started.
    """
    loaded = load_config(config_path)
    if loaded.problems:
        for problem in loaded.problems:
            logger.error("%s", problem.format(loaded.config.simpul.language))
        logger.error(
            "config reload rejected: %s has %d problems; the hub keeps the running config",
            config_path,
            len(loaded.problems),
        )
        return
    use_config(loaded.config)
    ops.record_audit(engine=db, actor="simpul", action="config_reloaded", target=str(config_path), detail={})
    logger.info("config reloaded from %s", config_path)


def _stop_all(stops: list[Callable[[], None]]) -> None:
    for stop in stops:
        try:
            stop()
        except Exception:
            logger.exception("stopping %r failed", stop)


# --- config file watcher -------------------------------------------------------------------------

# How often the watcher looks at the config file. A change is reloaded once the file has looked
# the same for one interval, so a reload follows a save within one to two intervals.
WATCH_INTERVAL_SECONDS = 1.0


class ConfigWatcher:
    """A daemon thread that reloads the config when its file changes on disk, and on request (SIGHUP).

    The thread polls the file's mtime, size and inode, and reads and hashes it only when those
    change. A file whose content equals the last content loaded is not reloaded, and content that
    was rejected is not tried again until it changes. Polling needs no inotify support, so it
    also works on network and container file systems, and a config file is small enough to hash.
    Reloads run on this thread: the SIGHUP handler only sets an event, so the HTTP server's
    thread does not wait for a reload.
    """

    def __init__(self, path: Path, reload: Callable[[], None], *, interval: float = WATCH_INTERVAL_SECONDS) -> None:
        self._path = path
        self._reload = reload
        self._interval = interval
        self._signature = _file_signature(path)
        self._loaded_signature = self._signature
        self._loaded_digest = _file_digest(path)
        self._wake = threading.Event()
        self._reload_requested = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simpul-config-watcher", daemon=True)

    def start(self) -> Stop:
        self._thread.start()
        logger.info("watching %s for changes every %.1f s", self._path, self._interval)
        return self.stop

    def request_reload(self) -> None:
        """Ask the watcher thread to reload now, even if the file looks unchanged; safe in a signal handler."""
        self._reload_requested.set()
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            forced = self._reload_requested.is_set()
            self._reload_requested.clear()
            try:
                self._check(forced)
            except Exception:
                logger.exception(
                    "config watcher: checking %s failed; it tries again in %.1f s", self._path, self._interval
                )

    def _check(self, forced: bool) -> None:
        signature = _file_signature(self._path)
        if forced:
            self._reload_now(signature)
            return

        # Wait until the file has looked the same for one interval, so a file written in several
        # steps is read once it is complete.
        settled = signature == self._signature
        self._signature = signature
        if not settled or signature is None or signature == self._loaded_signature:
            return
        self._loaded_signature = signature
        if _file_digest(self._path) == self._loaded_digest:
            return
        logger.info("config %s changed on disk; reloading", self._path)
        self._reload_now(signature)

    def _reload_now(self, signature: tuple[int, int, int] | None) -> None:
        self._loaded_signature = signature
        self._loaded_digest = _file_digest(self._path)
        self._reload()


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """Return (mtime in ns, size, inode) of ``path``, or None when it cannot be read."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
