"""Benchmark: raw durable_rules, the hub's engine, replay with SQLite, and HTTP ingestion, in one run.

    python tests/bench_hub.py [--devices 2000] [--readings 100000] [--seconds 10] [--skip-http]

All stages use the same workload: water-level gauges under three Siaga rules selected by kind,
with per-device thresholds from attributes, fed a random walk that crosses the thresholds now and
then. The HTTP stages send readings of their own, each reading once. Figures are printed with
each stage's ratio to the raw durable_rules stage, and the load average before the stages. It is
not a test: run it on demand, on an otherwise quiet machine, and compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from durable import engine as durable_engine  # noqa: E402

from rules.config import Config  # noqa: E402
from rules.engine import Engine, NormalReading  # noqa: E402
from rules.pipeline import Pipeline  # noqa: E402
from rules.readings import RawReading  # noqa: E402
from rules.store.db import connect  # noqa: E402

LEVELS = (3, 2, 1)
TOKEN = "bench-token-not-a-secret"


def config_dict(devices: int) -> dict:
    return {
        "simpul": {"database": "sqlite:///var/bench.db"},
        "agencies": [{"id": "dinas-sda", "name": "Dinas SDA"}],
        "kinds": {"water_level": {"metrics": {"level": {"unit": "cm", "min": -100, "max": 2000}}}},
        "devices": [
            {
                "id": f"gauge-{i}",
                "name": f"Gauge {i}",
                "agency": "dinas-sda",
                "kind": "water_level",
                "attributes": {"siaga_3": 500 + i % 50, "siaga_2": 600 + i % 50, "siaga_1": 700 + i % 50},
            }
            for i in range(devices)
        ],
        "sources": [{"id": "bench", "type": "http", "auth": {"token": "${SIMPUL_BENCH_TOKEN}"}}],
        "rules": [
            {
                "id": f"siaga-{level}",
                "name": f"Siaga {level}",
                "agency": "dinas-sda",
                "when": {"kind": "water_level", "metric": "level", "at_least": {"attribute": f"siaga_{level}"}},
                "then": [{"alert": {"message": "{rule.name}: {value} cm di {device.name}"}}],
            }
            for level in LEVELS
        ],
    }


def workload(
    devices: int, count: int, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
) -> list[tuple[str, float, datetime]]:
    """Return (device, level, ts) for a random walk per gauge, one reading per device in turn, one second apart."""
    generator = random.Random(1)
    levels = [generator.uniform(350, 550) for _ in range(devices)]
    readings = []
    for k in range(count):
        i = k % devices
        levels[i] = min(1900.0, max(0.0, levels[i] + generator.uniform(-8, 8)))
        readings.append((f"gauge-{i}", round(levels[i], 1), start + timedelta(seconds=k)))
    return readings


class QuietHost(durable_engine.Host):
    """durable_rules' Host without its background timer loops, which would slow every later stage."""

    def _run(self) -> None:
        return None


def bench_raw_durable(devices: int, readings: list[tuple[str, float, datetime]]) -> float:
    """The same three thresholds per gauge in plain durable_rules: one ruleset per gauge and level."""
    host = QuietHost()
    hits = [0]

    def action(_context: object) -> None:
        hits[0] += 1

    for i in range(devices):
        for level in LEVELS:
            threshold = {3: 500, 2: 600, 1: 700}[level] + i % 50
            name = f"g{i}-s{level}"
            host.set_rulesets({name: {"r": {"all": [{"m": {"$gte": {"value": threshold}}}], "run": action}}})

    started = time.perf_counter()
    for k, (device, value, _ts) in enumerate(readings):
        index = device.removeprefix("gauge-")
        for level in LEVELS:
            with contextlib.suppress(durable_engine.MessageNotHandledException):
                host.post(f"g{index}-s{level}", {"id": k * 3 + level, "sid": "0", "value": value})
    return len(readings) / (time.perf_counter() - started)


def bench_engine(config: Config, readings: list[tuple[str, float, datetime]]) -> float:
    engine = Engine(config)
    normal = [NormalReading(d, "level", v, ts, f"{d}|{ts}", "bench") for d, v, ts in readings]
    started = time.perf_counter()
    for reading in normal:
        engine.advance(reading.ts)
        engine.evaluate(reading)
        engine.take_effects()
        engine.take_dirty()
    return len(normal) / (time.perf_counter() - started)


def bench_replay(config: Config, readings: list[tuple[str, float, datetime]], scratch: Path) -> tuple[float, int]:
    db = connect(f"sqlite:///{scratch}/replay.db")
    pipeline = Pipeline(config, db, event_clock=True, send_actions=False)
    raws = [RawReading(d, "level", v, ts) for d, v, ts in readings]
    started = time.perf_counter()
    for start in range(0, len(raws), 2000):
        pipeline.process("bench", raws[start : start + 2000])
    rate = len(raws) / (time.perf_counter() - started)
    db.dispose()
    return rate, sum(pipeline.tally.firings.values())


# --- HTTP ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _client(port: int, bodies: list[bytes], deadline: float, counter: list[int]) -> None:
    """A keep-alive HTTP/1.1 client that sends one request at a time until the deadline or its last body.

    Every body is sent once, so that the hub stores every reading instead of returning duplicates.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            if time.perf_counter() >= deadline:
                break
            head = (
                "POST /api/v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Simpul-Source: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not status_line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"hub answered {status_line!r}")
            counter[0] += 1
    finally:
        writer.close()


async def _load(port: int, bodies: list[bytes], seconds: float, connections: int) -> float:
    """Return requests/s over ``connections`` keep-alive connections until the deadline or the last body."""
    counter = [0]
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, bodies[i::connections], deadline, counter) for i in range(connections)))
    elapsed = time.perf_counter() - started
    if counter[0] == len(bodies):
        print(f"  (all {len(bodies)} prepared requests were sent in {elapsed:.1f} s; raise the cap in bench_http)")
    return counter[0] / elapsed


# Distinct readings prepared per second of HTTP load, well above the rates this script has
# measured. Every request carries new readings, because a reading sent twice comes back as a
# duplicate, which is another path than the one measured here.
SINGLE_REQUESTS_PER_SECOND = 10_000
BATCH_READINGS_PER_SECOND = 60_000


def bench_http(config_data: dict, devices: int, scratch: Path, seconds: float) -> tuple[float, float]:
    """Start ``hub.py run`` in its own process and load it from this one; return req/s for single
    readings and readings/s for batches of 100."""
    config_path = scratch / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config_data))
    port = _free_port()
    env = dict(os.environ, SIMPUL_BENCH_TOKEN=TOKEN)
    command = [
        sys.executable,
        str(ROOT / "hub.py"),
        "run",
        "--config",
        str(config_path),
        "--port",
        str(port),
        "--db",
        f"sqlite:///{scratch}/http.db",
        "--no-simulate",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)

        def body(items: list[tuple[str, float, datetime]]) -> bytes:
            data = [{"device": d, "metric": "level", "value": v, "ts": ts.isoformat()} for d, v, ts in items]
            return json.dumps(data[0] if len(data) == 1 else data).encode()

        # The two loads use separate days, so no batch reading repeats a single one.
        single_readings = workload(devices, int(seconds * SINGLE_REQUESTS_PER_SECOND))
        batch_readings = workload(
            devices, int(seconds * BATCH_READINGS_PER_SECOND), start=datetime(2025, 6, 1, tzinfo=UTC)
        )
        singles = [body([reading]) for reading in single_readings]
        batches = [body(batch_readings[i : i + 100]) for i in range(0, len(batch_readings), 100)]
        del single_readings, batch_readings
        single_rate = asyncio.run(_load(port, singles, seconds, connections=64))
        batch_rate = asyncio.run(_load(port, batches, seconds, connections=16)) * 100
        return single_rate, batch_rate
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000, help="number of gauges (default 2000)")
    parser.add_argument(
        "--readings",
        type=int,
        default=100_000,
        help="readings for the durable_rules, engine and replay stages (default 100000)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each HTTP load (default 10 s)")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP stages")
    args = parser.parse_args()

    data = config_dict(args.devices)
    config = Config.model_validate(data)
    readings = workload(args.devices, args.readings)
    print(f"workload: {args.devices} gauges x 3 Siaga rules, {len(readings)} readings, {os.cpu_count()} CPUs")
    print(f"load average at the start: {_load_average()}")

    raw = bench_raw_durable(args.devices, readings)
    report("raw durable_rules (Host.post, 3 rulesets per reading)", raw, "readings/s", raw)
    report("hub engine, no I/O", bench_engine(config, readings), "readings/s", raw)
    with tempfile.TemporaryDirectory(prefix="simpul-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        replay, firings = bench_replay(config, readings, scratch)
        report(f"replay with SQLite persistence ({firings} firings)", replay, "readings/s", raw)
        if not args.skip_http:
            print(f"load average before the HTTP stages: {_load_average()}")
            single, batch = bench_http(data, args.devices, scratch, args.seconds)
            report("HTTP, one reading per request, 64 connections", single, "requests/s", raw)
            report("HTTP, batches of 100, 16 connections", batch, "readings/s", raw)


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(label: str, rate: float, unit: str, raw: float) -> None:
    print(f"{label:<56} {rate:>10,.0f} {unit:<11} {rate / raw:5.2f}x of raw durable_rules")


if __name__ == "__main__":
    main()
