"""The only module that imports durable_rules.

durable_rules evaluates every rule condition here. The rest of the hub uses one small interface:
register a condition set, then ask whether one edge of it holds for one probe (a flat dict of
the values a condition reads).

How it is used, and why:
1. State lives in the hub's store, not in durable_rules. Its timers run on the wall clock and
   are not persisted, and a ruleset holds at most 1024 live sessions, so durable_rules is used
   as a stateless matcher: every probe is an event in a single session and is consumed or
   rejected at once. Event-time durations are handled by the instance state machines.
2. An event is consumed by the first rule that matches it, so one event cannot answer several
   questions. Each probe therefore names the one edge it tests (``enter``, ``abort``,
   ``clear``, ``relapse``), and every condition set is its own ruleset. A ruleset with hundreds
   of rules makes every post scan all of them; one small ruleset per condition set keeps a post
   independent of the total number of rules.
3. ``post_batch`` aborts every action of the batch when one event matches nothing, so probes
   are posted one at a time. ``Host.post`` answers a probe that matches nothing by building a
   MessageNotHandledException, whose message is the whole event serialised again; that doubled
   the cost of the common "false" answer. Probes therefore go straight to the ruleset's
   compiled handle (``durable_rules_engine.assert_event``, the call ``Host.post`` makes), and
   only a match goes through ``Ruleset.do_actions`` as in ``Host.post``. Both are durable_rules
   2.0.28 internals; the tests of this module pin their behaviour.
4. A ruleset name cannot be registered twice in one process, so names carry a hash of the
   definition: an unchanged rule reuses its ruleset after a config reload.
5. Actions run synchronously inside ``post`` for a single event, and only set a flag; an
   exception raised inside an action would be swallowed by durable_rules.
6. ``Host`` starts two endless loops that visit every ruleset on a new ``threading.Timer``
   thread each, pausing only 0.2 s per round, to run timers and queued actions. With thousands
   of rulesets that is a constant storm of thread starts competing for the GIL. Nothing here
   uses timers or queued actions, so the matcher's host does not start those loops.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Mapping
from typing import Any

import durable_rules_engine
from durable import engine as durable_engine

Expression = dict[str, Any]
# Result codes of durable_rules_engine.assert_event (durable-rules 2.0.28).
_NOT_HANDLED = 1
_OBSERVED = 2
EDGES = ("enter", "abort", "clear", "relapse")


class _Host(durable_engine.Host):  # type: ignore[misc]
    """A durable_rules host without the background timer and dispatch loops (note 6)."""

    def _run(self) -> None:
        return None


class DurableMatcher:
    """Registers condition sets as durable_rules rulesets and evaluates probes against them."""

    def __init__(self) -> None:
        self._host = _Host()
        self._rulesets: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._matched = False
        self._lock = threading.Lock()

    def register(self, key: str, edges: Mapping[str, Expression]) -> str:
        """Register the edges of one condition set and return the ruleset name to probe.

        ``edges`` maps an edge name to a durable_rules expression over probe fields. Registering
        the same key and expressions again returns the existing ruleset.
        """
        unknown = set(edges) - set(EDGES)
        if unknown:
            raise ValueError(f"unknown edges {sorted(unknown)}: expected some of {EDGES}")

        digest = hashlib.sha1(json.dumps(edges, sort_keys=True).encode()).hexdigest()[:12]
        name = f"{key}~{digest}"
        with self._lock:
            if name in self._rulesets:
                return name

            # durable_rules edits the definition in place, so it gets its own copy.
            definition = {
                edge: {"all": [{"m": {"$and": [{"edge": edge}, copy.deepcopy(expression)]}}], "run": self._on_match}
                for edge, expression in edges.items()
            }
            self._host.set_rulesets({name: definition})
            self._rulesets[name] = self._host.get_ruleset(name)
        return name

    def holds(self, ruleset: str, edge: str, probe: dict[str, Any], encoded: str | None = None) -> bool:
        """Return whether ``edge`` of ``ruleset`` holds for the probe's values.

        ``encoded`` is ``encode_probe(probe)``, for a caller that tests one probe several times.
        """
        probe_id = next(self._ids)
        compiled = self._rulesets[ruleset]
        if encoded is None:
            encoded = encode_probe(probe)

        event = f'{{"id":{probe_id},"sid":"0","edge":"{edge}"{encoded}}}'
        code, state_handle = durable_rules_engine.assert_event(compiled._handle, event)
        if code == _NOT_HANDLED:
            return False
        if code == _OBSERVED:
            raise RuntimeError(f"durable_rules saw probe id {probe_id} twice; probe ids must be unique")

        self._matched = False
        failure: list[BaseException] = []
        compiled.do_actions(state_handle, lambda error, _state: failure.append(error) if error else None)
        if failure:
            raise RuntimeError(f"durable_rules failed to run the match action for {ruleset}") from failure[0]
        return self._matched

    def _on_match(self, _context: Any) -> None:
        self._matched = True


def encode_probe(probe: dict[str, Any]) -> str:
    """Serialise a probe's fields as the JSON members that ``holds`` puts into a durable_rules event.

    Probe values are finite numbers or text (the pipeline rejects NaN and infinity first), so
    ``repr`` of an int or float is valid JSON; building the text directly is about three times
    faster than ``json.dumps`` on this hot path.
    """
    return "".join(
        [
            f',"{name}":{json.dumps(value, ensure_ascii=False)}' if isinstance(value, str) else f',"{name}":{value!r}'
            for name, value in probe.items()
        ]
    )


# --- expressions ---------------------------------------------------------------------------------
# Small builders so that callers never write durable_rules' JSON operators themselves.


def greater(field: str, value: float) -> Expression:
    return {"$gt": {field: value}}


def greater_or_equal(field: str, value: float) -> Expression:
    return {"$gte": {field: value}}


def less(field: str, value: float) -> Expression:
    return {"$lt": {field: value}}


def less_or_equal(field: str, value: float) -> Expression:
    return {"$lte": {field: value}}


def equal(field: str, value: float | str) -> Expression:
    return {field: value}


def not_equal(field: str, value: float | str) -> Expression:
    return {"$neq": {field: value}}


def all_of(*expressions: Expression) -> Expression:
    if len(expressions) == 1:
        return expressions[0]
    return {"$and": list(expressions)}


def any_of(*expressions: Expression) -> Expression:
    if len(expressions) == 1:
        return expressions[0]
    return {"$or": list(expressions)}
