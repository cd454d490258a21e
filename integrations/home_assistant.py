"""Home Assistant over its websocket API through hass-client: entity states in as readings, and
service calls out as ``home_assistant`` action runs.

``HomeAssistantFeed`` turns state changes of configured entities into readings. On every
connection it subscribes to ``state_changed`` events and then fetches ``get_states`` once, so the
hub receives the current value of each entity at start-up. Each state becomes one reading: the
value is the state text (``"180.0"``, ``"on"``), the timestamp is the state's ``last_updated``
and the reading id is ``<entity_id>@<last_updated>``. A state fetched again after a reconnect
therefore has the same id and timestamp, and the store counts it as a duplicate instead of
storing it again. Home Assistant reports ``unavailable`` and ``unknown`` for entities without a
value, and the hub rejects those as ``unavailable``.

``HomeAssistantExecutor`` carries out ``home_assistant`` action runs for the outbox worker with
``call_service``, over one connection per source of its own, opened on the first run for that
source and kept open. Outcomes of one attempt:

- Home Assistant responds with a result: the run succeeded.
- Home Assistant responds with an error (an unknown service, invalid service data, a failing
  integration), or a target entity does not exist: ``PermanentActionError``, so the run is dead
  at once. Home Assistant itself accepts a call on a missing entity and only logs a warning, so
  the executor follows the entities' states on its connection (``get_states`` on connect, then
  ``state_changed`` events) and checks the targets before it calls.
- Home Assistant cannot be reached, rejects the token, drops the connection or does not respond
  in time, or a target entity is ``unavailable`` (Home Assistant would skip it):
  ``RetryableActionError``. Delivery is at least once: when the connection drops after the call
  was sent, Home Assistant may have carried it out, and the retry calls it again.

hass-client 1.4.1 does not reconnect by itself, so each connection (the feed's and the
executor's) reconnects after a lost connection or a failed login, waiting
``MIN_RECONNECT_DELAY`` seconds at first and doubling the wait up to ``MAX_RECONNECT_DELAY``. The
wait goes back to the minimum after a connection has been set up, and an action run that finds
its connection down cuts the wait short, so a call goes out as soon as Home Assistant is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from hass_client import HomeAssistantClient
from hass_client.exceptions import BaseHassClientError, FailedCommand

from integrations.base import Emit, ReadingSubmitter, Stop
from rules.config import Config, HomeAssistantSource
from rules.errors import PermanentActionError, RetryableActionError
from rules.readings import RawReading
from rules.secrets import MissingSecret, resolve_secret
from rules.store.models import ActionRun

logger = logging.getLogger(__name__)

MIN_RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 60.0
STOP_TIMEOUT_SECONDS = 10.0
SERVICE_CALL_FIELDS = ("source", "domain", "service")
# Error messages are stored on the run, whose column is limited to 1000 characters.
MAX_ERROR_CHARS = 500

T = TypeVar("T")
OnConnect = Callable[[HomeAssistantClient], Awaitable[None]]


class _LoopThread:
    """An asyncio event loop on a daemon thread, because hass-client is async and the hub's threads are not."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Cancel every task on the loop, let their cleanup run, and end the thread."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


class _Connection:
    """One websocket connection to Home Assistant, kept open: connect, log in, run ``on_connect``,
    wait until the connection ends, then connect again after a growing wait.

    Lives on one event loop. ``client`` is the connected client, or None while there is none.
    ``connected``, ``last_error`` and ``connections`` may be read from any thread.
    """

    def __init__(self, *, label: str, url: str, token: str, on_connect: OnConnect | None = None) -> None:
        self.label = label
        self.url = url
        self.on_connect = on_connect
        self.client: HomeAssistantClient | None = None
        self.connected = False
        self.last_error: str | None = None
        self.connections = 0
        self._token = token
        self._wake = asyncio.Event()
        self._attempt_ended = asyncio.Event()

    @property
    def reconnects(self) -> int:
        return max(self.connections - 1, 0)

    async def run(self) -> None:
        """Connect, wait until the connection drops, and reconnect with a growing wait, until cancelled."""
        delay = MIN_RECONNECT_DELAY
        while True:
            connections_before = self.connections
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
                self.client = None
                self._end_attempt()

            if self.connections > connections_before:
                delay = MIN_RECONNECT_DELAY
            logger.warning("%s: %s; reconnecting in %g s", self.label, self.last_error, delay)
            await self._sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)

    async def wait_connected(self, timeout: float) -> bool:
        """Return whether the connection is up, trying to connect at once when it is down.

        Waits for the connection attempt in progress (or a new one) to end, at most ``timeout`` seconds.
        """
        if self.connected:
            return True
        attempt_ended = self._attempt_ended
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempt_ended.wait(), timeout)
        return self.connected

    async def _session(self) -> None:
        """Run one connection: log in, run ``on_connect``, then wait for the connection to end."""
        client = HomeAssistantClient(self.url, self._token)
        listener: asyncio.Task[None] | None = None
        try:
            await client.connect()
            listener = asyncio.create_task(client.start_listening())
            if self.on_connect is not None:
                try:
                    await self.on_connect(client)
                except asyncio.CancelledError:
                    # hass-client cancels the commands in flight when the connection drops. Only a
                    # cancellation of this task itself (by stop) is passed on.
                    if _cancelled_from_outside():
                        raise
                    return

            self.connections += 1
            self.client = client
            self.connected = True
            self.last_error = None
            self._end_attempt()
            logger.info(
                "%s: connected to Home Assistant %s (connection %d)", self.label, client.version, self.connections
            )
            await listener
        finally:
            # disconnect also closes the aiohttp session that hass-client opened for this client.
            await client.disconnect()
            if listener is not None and not listener.done():
                listener.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when ``wait_connected`` requests a connection meanwhile."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _end_attempt(self) -> None:
        # Waiters hold the event of the attempt they wait for; the next attempt gets a new one.
        self._attempt_ended.set()
        self._attempt_ended = asyncio.Event()


def _cancelled_from_outside() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


# --- readings ----------------------------------------------------------------------------------


class HomeAssistantFeed(ReadingSubmitter):
    """Subscribes to state changes of a ``type: home_assistant`` source and emits their readings.

    Raises MissingSecret when the token's environment variable is not set.
    """

    kind = "home_assistant"

    def __init__(self, source: HomeAssistantSource, config: Config) -> None:
        self.id = source.id
        self.source = source
        self.config = config
        self.events = 0
        self.rejected = 0
        self._entities = {entity.entity_id: entity for entity in source.entities}
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self._connection = _Connection(
            label=f"home_assistant source {self.id}",
            url=source.url,
            token=resolve_secret(source.token),
            on_connect=self._on_connect,
        )
        self._loop_thread: _LoopThread | None = None

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def reconnects(self) -> int:
        return self._connection.reconnects

    # ReadingSubmitter records a store failure here too, so the feed and its connection share one field.
    @property
    def last_error(self) -> str | None:
        return self._connection.last_error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        self._connection.last_error = value

    def start(self, emit: Emit) -> Stop:
        self._emit = emit
        loop_thread = _LoopThread(f"home-assistant-{self.id}")
        self._loop_thread = loop_thread
        loop_thread.submit(self._connection.run())
        logger.info("home_assistant source %s: connecting to %s", self.id, self.source.url)

        def stop() -> None:
            loop_thread.stop()
            self._connection.connected = False
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

    async def _on_connect(self, client: HomeAssistantClient) -> None:
        await client.subscribe_events(self._on_event, "state_changed")
        states = await client.get_states()
        self._submit([reading for state in states if (reading := self._reading(state)) is not None])

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


# --- service calls -----------------------------------------------------------------------------


class _EntityStates:
    """The state text of every entity in one Home Assistant, followed over a connection."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}

    async def follow(self, client: HomeAssistantClient) -> None:
        """Subscribe to state changes, then fetch every state; the ``on_connect`` of a connection."""
        self._states.clear()
        await client.subscribe_events(self._on_event, "state_changed")
        await self.refresh(client)

    async def refresh(self, client: HomeAssistantClient) -> None:
        """Fetch every state again."""
        for state in await client.get_states():
            self._states[state["entity_id"]] = str(state["state"])

    def missing(self, payload: dict[str, Any]) -> bool:
        """Return whether a target entity of a service call is not among the known states."""
        return any(entity_id not in self._states for entity_id in _target_entity_ids(payload))

    def check(self, where: str, payload: dict[str, Any]) -> None:
        """Raise PermanentActionError for a target entity that does not exist, and RetryableActionError
        for one that is unavailable."""
        for entity_id in _target_entity_ids(payload):
            state = self._states.get(entity_id)
            if state is None:
                raise PermanentActionError(f"{where}: entity {entity_id} does not exist in Home Assistant")
            if state == "unavailable":
                raise RetryableActionError(f"{where}: entity {entity_id} is unavailable in Home Assistant")

    def _on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        entity_id = data.get("entity_id")
        new_state = data.get("new_state")
        if not isinstance(entity_id, str):
            return
        if isinstance(new_state, dict):
            self._states[entity_id] = str(new_state.get("state"))
        else:
            # A removed entity has no new state.
            self._states.pop(entity_id, None)


class HomeAssistantExecutor:
    """Calls the Home Assistant services of ``home_assistant`` action runs, through the connection
    of the source that the run's ``source`` names.

    The run's payload contains ``source``, ``domain``, ``service`` and, when given, ``target``
    (``{"entity_id": ...}``) and ``service_data``, as the pipeline rendered them.
    """

    def __init__(
        self,
        sources: Iterable[HomeAssistantSource],
        *,
        connect_timeout_seconds: float = 5.0,
        call_timeout_seconds: float = 10.0,
    ) -> None:
        self.sources = {source.id: source for source in sources}
        self.connect_timeout_seconds = connect_timeout_seconds
        self.call_timeout_seconds = call_timeout_seconds
        self._connections: dict[str, tuple[_Connection, _EntityStates]] = {}
        self._loop_thread: _LoopThread | None = None
        self._lock = threading.Lock()

    def max_attempts(self, run: ActionRun) -> int:
        """Return the source's ``max_attempts``, or 1 for an unknown source."""
        source = self.sources.get(str(run.payload.get("source")))
        return source.max_attempts if source is not None else 1

    def health(self) -> dict[str, Any]:
        """Return ``healthy`` (false while a connection is down) and the state of each source's
        connection, which the first run through that source opens."""
        with self._lock:
            connections = dict(self._connections)
        sources = {
            source_id: {
                "connected": connection.connected,
                "last_error": connection.last_error,
                "reconnects": connection.reconnects,
            }
            for source_id, (connection, _entities) in connections.items()
        }
        return {"healthy": all(state["connected"] for state in sources.values()), "sources": sources}

    def use_sources(self, sources: Iterable[HomeAssistantSource]) -> None:
        """Switch to the home_assistant sources of a reloaded config.

        When a source with an open connection changed or is gone, every connection is closed,
        because they share one event loop. The next run through each source opens it again.
        """
        new = {source.id: source for source in sources}
        with self._lock:
            changed = any(new.get(source_id) != self.sources.get(source_id) for source_id in self._connections)
        if changed:
            self.close()
        with self._lock:
            self.sources = new

    def close(self) -> None:
        with self._lock:
            loop_thread = self._loop_thread
            self._loop_thread = None
            self._connections.clear()
        if loop_thread is not None:
            loop_thread.stop()

    def run(self, run: ActionRun) -> None:
        """Call the run's service once and wait for Home Assistant's response.

        Raises PermanentActionError when Home Assistant responds with an error, for a payload
        without the call's fields, an unknown source or a missing token secret.
        Raises RetryableActionError when Home Assistant cannot be reached, the connection drops
        before the response, or the response does not come in time.
        """
        missing = [name for name in SERVICE_CALL_FIELDS if name not in run.payload]
        if missing:
            raise PermanentActionError(f"home_assistant run {run.id} has no {', '.join(missing)} in its payload")
        source_id = str(run.payload["source"])
        connection, entities, loop_thread = self._connection(source_id)

        future = loop_thread.submit(self._call(connection, entities, run.payload))
        wait_seconds = self.connect_timeout_seconds + self.call_timeout_seconds + 5.0
        try:
            future.result(wait_seconds)
        except concurrent.futures.TimeoutError as error:
            future.cancel()
            raise RetryableActionError(
                f"{_describe_call(run.payload)}: no outcome within {wait_seconds:g} s"
            ) from error

    async def _call(self, connection: _Connection, entities: _EntityStates, payload: dict[str, Any]) -> None:
        where = _describe_call(payload)
        if not await connection.wait_connected(self.connect_timeout_seconds):
            reason = connection.last_error or f"not connected within {self.connect_timeout_seconds:g} s"
            raise RetryableActionError(f"{where}: {reason}")
        client = connection.client
        if client is None:
            raise RetryableActionError(f"{where}: the connection was closed")

        try:
            if entities.missing(payload):
                # The state_changed event of an entity created a moment ago may not have arrived yet.
                await asyncio.wait_for(entities.refresh(client), self.call_timeout_seconds)
            entities.check(where, payload)
            await asyncio.wait_for(
                client.call_service(
                    str(payload["domain"]),
                    str(payload["service"]),
                    service_data=payload.get("service_data"),
                    target=payload.get("target"),
                ),
                self.call_timeout_seconds,
            )
        except FailedCommand as error:
            raise PermanentActionError(_clip(f"{where}: Home Assistant responded with an error: {error}")) from error
        except TimeoutError as error:
            raise RetryableActionError(
                f"{where}: Home Assistant did not respond within {self.call_timeout_seconds:g} s"
            ) from error
        except BaseHassClientError as error:
            raise RetryableActionError(_clip(f"{where}: {type(error).__name__}: {error}")) from error
        except OSError as error:
            raise RetryableActionError(_clip(f"{where}: connection failed: {error}")) from error
        except asyncio.CancelledError as error:
            # hass-client cancels the commands in flight when the connection drops.
            if _cancelled_from_outside():
                raise
            raise RetryableActionError(f"{where}: the connection was lost before Home Assistant responded") from error

    def _connection(self, source_id: str) -> tuple[_Connection, _EntityStates, _LoopThread]:
        """Return the kept connection of a source and its entities' states, opening it on first use."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread("home-assistant-actions")
            known = self._connections.get(source_id)
            if known is not None:
                return (*known, self._loop_thread)
            source = self.sources.get(source_id)
            if source is None:
                raise PermanentActionError(
                    f"home_assistant source {source_id} is not in the config, so it cannot call services"
                )
            try:
                token = resolve_secret(source.token)
            except MissingSecret as error:
                raise PermanentActionError(f"home_assistant source {source_id}: {error}") from error
            entities = _EntityStates()
            label = f"home_assistant actions through source {source_id}"
            connection = _Connection(label=label, url=source.url, token=token, on_connect=entities.follow)
            self._connections[source_id] = (connection, entities)
            self._loop_thread.submit(connection.run())
            return connection, entities, self._loop_thread


def _target_entity_ids(payload: dict[str, Any]) -> list[str]:
    entity_ids = (payload.get("target") or {}).get("entity_id") or []
    return [entity_ids] if isinstance(entity_ids, str) else list(entity_ids)


def _describe_call(payload: dict[str, Any]) -> str:
    return f"home_assistant source {payload.get('source')}, service {payload.get('domain')}.{payload.get('service')}"


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."
