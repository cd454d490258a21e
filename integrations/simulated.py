"""A simulated feed, clearly labelled, so a fresh hub shows live behaviour without any sensors.

Every ``interval`` it sends one made-up reading per metric of each device it drives. Water
levels swing between normal and above Siaga 2 over a twenty-minute cycle (computed from each
device's ``siaga_*`` attributes), waste bins fill up and are emptied, air quality drifts, pumps
switch, and now and then a gauge reports ``unavailable`` so rejected readings show up too.
All readings carry the source id, so they are easy to tell apart from real data in the store.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from integrations.base import Emit, Stop
from rules.config import Config, Device, SimulatedSource
from rules.readings import RawReading

logger = logging.getLogger(__name__)

CYCLE_SECONDS = 1200.0


class SimulatedFeed:
    """Generates readings for the devices of a ``type: simulated`` source."""

    def __init__(self, source: SimulatedSource, config: Config, *, seed: int = 7) -> None:
        self.id = source.id
        self.interval = source.interval.total_seconds()
        selected = set(source.devices)
        self.devices = [d for d in config.devices if d.enabled and (not selected or d.id in selected)]
        self.kinds = config.kinds
        self.random = random.Random(seed)
        self.fill: dict[str, float] = {d.id: self.random.uniform(20, 80) for d in self.devices}
        self.air: dict[str, float] = {d.id: self.random.uniform(40, 90) for d in self.devices}
        self.sent = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._started = time.monotonic()

    def start(self, emit: Emit) -> Stop:
        thread = threading.Thread(target=self._run, args=(emit,), name=f"simulated-{self.id}", daemon=True)
        thread.start()
        logger.warning(
            "SIMULATED FEED %s is on: %d devices get made-up readings every %.0f s (turn it off with --no-simulate)",
            self.id,
            len(self.devices),
            self.interval,
        )

        def stop() -> None:
            self._stop.set()
            thread.join(timeout=5)

        return stop

    def health(self) -> dict[str, Any]:
        return {"healthy": not self._stop.is_set(), "simulated": True, "sent": self.sent, "rejected": self.rejected}

    def _run(self, emit: Emit) -> None:
        while not self._stop.wait(self.interval):
            readings = self.readings(datetime.now(UTC), time.monotonic() - self._started)
            try:
                results = emit(self.id, readings).result(timeout=30)
            except Exception:
                logger.exception("simulated feed %s: the hub did not take %d readings", self.id, len(readings))
                continue
            self.sent += len(readings)
            self.rejected += sum(1 for result in results if result.outcome == "rejected")

    def readings(self, now: datetime, elapsed: float) -> list[RawReading]:
        """Return one reading per metric of every driven device, at ``elapsed`` seconds into the run."""
        readings = []
        for device in self.devices:
            kind = self.kinds.get(device.kind)
            if kind is None:
                continue
            for metric_name, metric in kind.metrics.items():
                value = self._value(device, metric_name, metric.states, elapsed)
                readings.append(RawReading(device.id, metric_name, value, now))
        return readings

    def _value(self, device: Device, metric: str, states: list[str] | None, elapsed: float) -> object:
        if states:
            phase = math.sin(2 * math.pi * elapsed / CYCLE_SECONDS)
            return states[0] if phase > 0 else states[-1]
        if self.random.random() < 0.01:
            return "unavailable"

        attributes = device.attributes
        if "siaga_3" in attributes and "siaga_2" in attributes:
            low = float(attributes["siaga_3"]) * 0.7
            siaga_2 = float(attributes["siaga_2"])
            siaga_1 = float(attributes.get("siaga_1", siaga_2 * 1.2))
            peak = siaga_2 + 0.6 * (siaga_1 - siaga_2)
            # Starting a quarter into the cycle puts the first Siaga crossing about a minute in.
            phase = (1 - math.cos(2 * math.pi * (elapsed + CYCLE_SECONDS / 4) / CYCLE_SECONDS)) / 2
            return round(low + (peak - low) * phase + self.random.uniform(-2, 2), 1)
        if device.kind == "waste_bin" or metric == "fill":
            self.fill[device.id] += self.random.uniform(0.5, 3.0)
            if self.fill[device.id] > 100:
                self.fill[device.id] = self.random.uniform(2, 10)
            return round(min(self.fill[device.id], 100.0), 1)
        if metric in ("ispu", "max", "pm25", "pm10"):
            self.air[device.id] = min(250.0, max(10.0, self.air[device.id] + self.random.uniform(-6, 7)))
            return round(self.air[device.id])
        return round(self.random.uniform(0, 30), 1)
