"""A Home Assistant client that turns state changes of configured entities into readings.

The feed runs its own asyncio loop on a thread and talks to Home Assistant's websocket API
through hass-client. On every connection it subscribes to ``state_changed`` events and then
fetches ``get_states`` once, so the hub receives the current value of each entity at start-up.

Each state becomes one reading: the value is the state text (``"180.0"``, ``"on"``), the
timestamp is the state's ``last_updated`` and the reading id is ``<entity_id>@<last_updated>``.
A state fetched again after a reconnect therefore has the same id and timestamp, and the store
counts it as a duplicate instead of storing it again. Home Assistant reports ``unavailable``
and ``unknown`` for entities without a value, and the hub rejects those as ``unavailable``.

hass-client 1.4.1 does not reconnect by itself, so the feed reconnects after a lost connection
or a failed login, waiting ``MIN_RECONNECT_DELAY`` seconds at first and doubling the wait up to
``MAX_RECONNECT_DELAY``. The wait goes back to the minimum after a connection has been set up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from hass_client import HomeAssistantClient
from hass_client.exceptions import BaseHassClientError

from integrations.base import Emit, ReadingSubmitter, Stop
from rules.config import Config, HomeAssistantSource
from rules.readings import RawReading
from rules.secrets import resolve_secret

logger = logging.getLogger(__name__)

MIN_RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 60.0
STOP_TIMEOUT_SECONDS = 10.0


class HomeAssistantFeed(ReadingSubmitter):
    """Subscribes to state changes of a ``type: home_assistant`` source and emits their readings.

    Raises MissingSecret when the token's environment variable is not set.
    """

    kind = "home_assistant"

    def __init__(self, source: HomeAssistantSource, config: Config) -> None:
        self.id = source.id
        self.source = source
        self.config = config
        self.connected = False
        self.last_error: str | None = None
        self.events = 0
        self.rejected = 0
        self.reconnects = 0
        self._connections = 0
        self._token = resolve_secret(source.token)
        self._entities = {entity.entity_id: entity for entity in source.entities}
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, emit: Emit) -> Stop:
        self._emit = emit
        self._task = self._loop.create_task(self._run())
        self._thread = threading.Thread(target=self._run_loop, name=f"home-assistant-{self.id}", daemon=True)
        self._thread.start()
        logger.info("home_assistant source %s: connecting to %s", self.id, self.source.url)

        def stop() -> None:
            task = self._task
            if task is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(task.cancel)
            if self._thread is not None:
                self._thread.join(STOP_TIMEOUT_SECONDS)
            self.connected = False
            logger.info("home_assistant source %s: stopped", self.id)

        return stop

    def health(self) -> dict[str, Any]:
        return {
            "healthy": self.connected,
            "connected": self.connected,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "events": self.events,
            "rejected": self.rejected,
        }

    # --- the event loop thread ---

    def _run_loop(self) -> None:
        assert self._task is not None
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _run(self) -> None:
        """Connect, read until the connection drops, and reconnect with a growing wait."""
        delay = MIN_RECONNECT_DELAY
        while True:
            connections_before = self._connections
            try:
                await self._session()
                self.last_error = "the connection was closed"
            except BaseHassClientError as error:
                # hass-client's messages carry neither the token nor the request, so they are safe to log.
                self.last_error = f"{type(error).__name__}: {error}"
            except OSError as error:
                self.last_error = f"connection failed: {error}"
            finally:
                self.connected = False

            if self._connections > connections_before:
                delay = MIN_RECONNECT_DELAY
            logger.warning("home_assistant source %s: %s; reconnecting in %g s", self.id, self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def _session(self) -> None:
        """Run one connection: log in, subscribe, fetch the current states, then wait for it to end."""
        client = HomeAssistantClient(self.source.url, self._token)
        listener: asyncio.Task[None] | None = None
        try:
            await client.connect()
            listener = asyncio.create_task(client.start_listening())
            try:
                await client.subscribe_events(self._on_event, "state_changed")
                states = await client.get_states()
            except asyncio.CancelledError:
                # hass-client cancels the commands in flight when the connection drops. Only a
                # cancellation of this task itself (by stop) is passed on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                return

            self._connections += 1
            self.reconnects = self._connections - 1
            self.connected = True
            self.last_error = None
            logger.info(
                "home_assistant source %s: connected to Home Assistant %s (connection %d)",
                self.id,
                client.version,
                self._connections,
            )
            self._submit([reading for state in states if (reading := self._reading(state)) is not None])
            await listener
        finally:
            # disconnect also closes the aiohttp session that hass-client opened for this client.
            await client.disconnect()
            if listener is not None and not listener.done():
                listener.cancel()

    # --- mapping ---

    def _on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if data.get("entity_id") not in self._entities:
            return
        self.events += 1
        reading = self._reading(data.get("new_state"))
        if reading is not None:
            self._submit([reading])

    def _reading(self, state: Any) -> RawReading | None:
        """Map one Home Assistant state object to a reading, or None for an entity that is not mapped.

        A removed entity has no new state (``null``), which yields no reading.
        """
        if not isinstance(state, dict):
            return None
        entity = self._entities.get(state.get("entity_id", ""))
        if entity is None:
            return None
        last_updated = state.get("last_updated")
        reading_id = None if last_updated is None else f"{entity.entity_id}@{last_updated}"
        return RawReading(entity.device, entity.metric, state.get("state"), last_updated, reading_id)

    # --- handing readings to the hub ---
