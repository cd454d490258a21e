"""Node-RED flows kept in git: load and validate the flow files, compare them with what a
Node-RED instance runs, and deploy them through its admin HTTP API.

Exceptions:

    SimpulError
     +-- FlowFileError       a flow file is missing, not JSON, or not a valid list of nodes
     +-- NodeRedError        the admin API rejected a request or returned something unexpected
          +-- NodeRedUnreachable   no HTTP response from Node-RED at all

``NodeRedExecutor`` carries out ``node_red`` action runs for the outbox worker: it POSTs the
firing to an http-in endpoint of a deployed flow.

A deployment is always ``full``: Node-RED replaces every flow it runs with the nodes given, so
nodes that exist only in the editor are removed. ``diff`` lists them first.

The admin URL, user name and password come from ``SIMPUL_NODE_RED_URL``,
``SIMPUL_NODE_RED_USERNAME`` and ``SIMPUL_NODE_RED_PASSWORD``. The password and the access
token are never logged or put in an error message, and messages show the URL without user info.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from rules.errors import PermanentActionError, RetryableActionError, SimpulError
from rules.store.models import ActionRun

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:1880"
# node-red-admin is the client id that Node-RED's adminAuth accepts for the password grant.
ADMIN_CLIENT_ID = "node-red-admin"
API_VERSION_HEADERS = {"Node-RED-API-Version": "v2"}
# npm's own files sit in the flows folder beside the flow files and are not flows.
NOT_FLOW_FILES = frozenset({"package.json", "package-lock.json"})
# Node types that other nodes name in ``z``: a node with ``z`` belongs to that tab or subflow.
CONTAINER_TYPES = frozenset({"tab", "subflow"})

# 404 is retried because http-in endpoints return 404 for a moment after a deployment.
RETRYABLE_ENDPOINT_STATUSES = frozenset({404, 408, 429})
DEFAULT_MAX_ATTEMPTS = 6

Node = dict[str, Any]


class FlowFileError(SimpulError):
    """Raised when the flow files cannot be deployed. ``problems`` lists every problem found, one a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class NodeRedError(SimpulError):
    """Raised when Node-RED's admin API rejects a request or returns a body that is not the expected JSON."""


class NodeRedUnreachable(NodeRedError):
    """Raised when no HTTP response came from Node-RED: connection refused, DNS failure or timeout."""


# --- flow files --------------------------------------------------------------------------------


def load_flow_files(folder: Path) -> list[Node]:
    """Read every ``*.json`` flow file in ``folder`` (sorted by name) and return their nodes as one list.

    Raises FlowFileError that lists all problems at once. A problem is invalid JSON, a file that
    is not a list of node objects, a node without a string ``id`` or ``type``, an id used twice,
    or a ``z`` that names no tab or subflow in the files.
    """
    if not folder.is_dir():
        raise FlowFileError([f"{folder}: flow folder not found: pass the right path with --folder"])
    paths = sorted(path for path in folder.glob("*.json") if path.name not in NOT_FLOW_FILES)
    if not paths:
        raise FlowFileError([f"{folder}: no *.json flow files found"])

    problems: list[str] = []
    nodes: list[Node] = []
    file_of_id: dict[str, str] = {}
    for path in paths:
        for node in _read_nodes(path, problems):
            node_id = node["id"]
            if node_id in file_of_id:
                problems.append(
                    f"{path.name}: node id {node_id!r} ({_label(node)}) is already used in {file_of_id[node_id]}"
                )
                continue
            file_of_id[node_id] = path.name
            nodes.append(node)

    container_ids = {node["id"] for node in nodes if node["type"] in CONTAINER_TYPES}
    for node in nodes:
        parent = node.get("z")
        if parent is not None and parent not in container_ids:
            problems.append(
                f"{file_of_id[node['id']]}: node {node['id']!r} ({_label(node)}) has z {parent!r}, "
                "which is no tab or subflow in the flow files"
            )

    if problems:
        raise FlowFileError(problems)
    return nodes


def _read_nodes(path: Path, problems: list[str]) -> list[Node]:
    """Parse one flow file, append its problems to ``problems`` and return its valid nodes."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        problems.append(f"{path.name}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}")
        return []
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{path.name}: cannot read the file: {error}")
        return []

    if not isinstance(document, list):
        problems.append(f"{path.name}: expected a JSON list of nodes, got {_json_type(document)}")
        return []

    valid: list[Node] = []
    for index, node in enumerate(document):
        where = f"{path.name}[{index}]"
        if not isinstance(node, dict):
            problems.append(f"{where}: expected a node object, got {_json_type(node)}")
            continue
        missing = [key for key in ("id", "type") if not isinstance(node.get(key), str) or not node[key]]
        if missing:
            problems.append(f"{where}: node {node.get('id')!r} is missing {' and '.join(missing)} (a non-empty string)")
            continue
        valid.append(node)
    return valid


def _json_type(value: Any) -> str:
    """Return the JSON name of a parsed value's type, e.g. object for a dict."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _label(node: Mapping[str, Any]) -> str:
    """Return a node's type and its name or label, as the Node-RED editor shows it."""
    name = node.get("name") or node.get("label")
    return f"{node.get('type')} {name!r}" if name else str(node.get("type"))


# --- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowDiff:
    """Nodes to add, remove and change to turn the running flows into the wanted ones, as ``id (type 'name')``."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """Format the diff as ``+``, ``-`` and ``~`` lines, one node a line."""
        return (
            [f"+ {entry}" for entry in self.added]
            + [f"- {entry}" for entry in self.removed]
            + [f"~ {entry}" for entry in self.changed]
        )


def diff(current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]) -> FlowDiff:
    """Compare nodes by id: a node is changed when any of its properties differs, position included."""
    current_by_id = {node["id"]: node for node in current}
    wanted_by_id = {node["id"]: node for node in wanted}

    def entry(node: Mapping[str, Any]) -> str:
        return f"{node['id']} ({_label(node)})"

    added = [entry(node) for node_id, node in wanted_by_id.items() if node_id not in current_by_id]
    removed = [entry(node) for node_id, node in current_by_id.items() if node_id not in wanted_by_id]
    changed = [
        entry(node)
        for node_id, node in wanted_by_id.items()
        if node_id in current_by_id and dict(current_by_id[node_id]) != dict(node)
    ]
    return FlowDiff(added=added, removed=removed, changed=changed)


# --- admin API client --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRedSettings:
    """Address of Node-RED's admin API and the adminAuth user to log in as (None when adminAuth is off)."""

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeRedSettings:
        values = os.environ if environ is None else environ
        return cls(
            url=(values.get("SIMPUL_NODE_RED_URL") or DEFAULT_URL).rstrip("/"),
            username=values.get("SIMPUL_NODE_RED_USERNAME") or None,
            password=values.get("SIMPUL_NODE_RED_PASSWORD") or None,
        )

    @property
    def display_url(self) -> str:
        """The URL without user info, query or fragment, safe to print."""
        url = httpx.URL(self.url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}{url.path.rstrip('/')}"


class NodeRedClient:
    """Client for the admin endpoints ``/auth/token`` and ``/flows``, used as a context manager."""

    def __init__(self, settings: NodeRedSettings, *, timeout_seconds: float = 10.0) -> None:
        self.settings = settings
        self._http = httpx.Client(base_url=settings.url, timeout=timeout_seconds)
        self._token: str | None = None

    def __enter__(self) -> NodeRedClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get_flows(self) -> tuple[list[Node], str]:
        """Return the nodes that Node-RED runs and their revision ``rev``."""
        body = self._request("GET", "/flows")
        flows = body.get("flows")
        if not isinstance(flows, list):
            raise NodeRedError(f"Node-RED at {self.settings.display_url} returned flows without a list of nodes")
        return flows, str(body.get("rev", ""))

    def deploy(self, flows: Sequence[Mapping[str, Any]]) -> str:
        """Replace every flow Node-RED runs with ``flows`` (a full deployment) and return the new ``rev``."""
        body = self._request(
            "POST", "/flows", json={"flows": list(flows)}, headers={"Node-RED-Deployment-Type": "full"}
        )
        logger.info("deployed %d Node-RED nodes to %s, rev %s", len(flows), self.settings.display_url, body.get("rev"))
        return str(body.get("rev", ""))

    def _request(
        self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        all_headers = {**API_VERSION_HEADERS, **self._auth_headers(), **(headers or {})}
        response = self._send(method, path, json=json, headers=all_headers)
        if response.status_code == 401:
            raise NodeRedError(
                f"Node-RED at {self.settings.display_url} rejected the request (401 Unauthorized): set "
                "SIMPUL_NODE_RED_USERNAME and SIMPUL_NODE_RED_PASSWORD to an adminAuth user with write permission"
            )
        if response.status_code >= 400:
            raise NodeRedError(
                f"Node-RED at {self.settings.display_url} responded to {method} {path} with HTTP "
                f"{response.status_code}: {response.text[:300]}"
            )
        try:
            body = response.json()
        except ValueError as error:
            raise NodeRedError(f"Node-RED at {self.settings.display_url} returned invalid JSON for {path}") from error
        if not isinstance(body, dict):
            raise NodeRedError(f"Node-RED at {self.settings.display_url} returned a non-object body for {path}")
        return body

    def _auth_headers(self) -> dict[str, str]:
        if self.settings.username is None:
            return {}
        if self._token is None:
            self._token = self._fetch_token()
        return {"Authorization": f"Bearer {self._token}"}

    def _fetch_token(self) -> str:
        form = {
            "client_id": ADMIN_CLIENT_ID,
            "grant_type": "password",
            "scope": "*",
            "username": self.settings.username or "",
            "password": self.settings.password or "",
        }
        response = self._send("POST", "/auth/token", data=form)
        if response.status_code in (401, 403):
            raise NodeRedError(
                f"Node-RED at {self.settings.display_url} rejected the login of user {self.settings.username!r}: "
                "check SIMPUL_NODE_RED_USERNAME and SIMPUL_NODE_RED_PASSWORD"
            )
        token = response.json().get("access_token") if response.status_code == 200 else None
        if not isinstance(token, str):
            raise NodeRedError(
                f"Node-RED at {self.settings.display_url} issued no access token (HTTP {response.status_code}): "
                "is adminAuth enabled in its settings file? Without adminAuth, unset SIMPUL_NODE_RED_USERNAME"
            )
        return token

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise NodeRedUnreachable(
                f"Node-RED is not reachable at {self.settings.display_url} ({type(error).__name__}): start Node-RED, "
                "or set SIMPUL_NODE_RED_URL to its admin URL"
            ) from error


# --- outbox executor ---------------------------------------------------------------------------


class NodeRedExecutor:
    """Sends ``node_red`` action runs to the http-in endpoint that the run's target path names.

    The run's payload is POSTed as JSON with ``X-Simpul-Delivery`` (the run id) so that a flow
    can de-duplicate repeated deliveries.
    """

    def __init__(
        self, settings: NodeRedSettings, *, timeout_seconds: float = 10.0, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        # httpx logs every request URL at INFO, and the URL may carry user info.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.settings = settings
        self._max_attempts = max_attempts
        self._http = httpx.Client(base_url=settings.url, timeout=timeout_seconds, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def max_attempts(self, run: ActionRun) -> int:
        return self._max_attempts

    def run(self, run: ActionRun) -> None:
        """POST the run's payload to Node-RED once.

        Raises RetryableActionError for a connection error, a timeout, an HTTP 5xx, 404, 408 or 429.
        Raises PermanentActionError for a missing path, a payload that is not JSON, or another HTTP 4xx or 3xx.
        """
        # NOTE: http-in endpoints protected by Node-RED's httpNodeAuth are not supported yet.
        path = run.target or ""
        where = f"Node-RED endpoint {self.settings.display_url}{path}"
        if not path.startswith("/"):
            raise PermanentActionError(f"node_red run {run.id} has no path: set node_red.path in config.yaml")
        try:
            body = json.dumps(run.payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise PermanentActionError(f"{where}: the payload is not valid JSON: {error}") from error

        headers = {"Content-Type": "application/json", "X-Simpul-Delivery": str(run.id)}
        try:
            response = self._http.post(path, content=body, headers=headers)
        except httpx.TimeoutException as error:
            raise RetryableActionError(f"{where}: timed out ({type(error).__name__})") from error
        except httpx.TransportError as error:
            raise RetryableActionError(f"{where}: request failed ({type(error).__name__})") from error

        status = response.status_code
        if 200 <= status < 300:
            return
        described = f"{where} returned HTTP {status} {response.reason_phrase}".rstrip()
        if status >= 500 or status in RETRYABLE_ENDPOINT_STATUSES:
            raise RetryableActionError(described)
        raise PermanentActionError(described)
