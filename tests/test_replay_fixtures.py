"""Replay the synthetic exports in ``tests/fixtures`` with ``hub.py replay`` and check every count.

The expected counts were worked out by hand from the fixture rows; the comments walk through
them. Readings are sorted by event time before evaluation, the clock is the newest accepted
event time, and a rule without ``clear`` resolves on the first valid reading that does not
meet its trigger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def run_replay(data_name: str, config_name: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "hub.py",
        "replay",
        str(FIXTURES / data_name),
        "--config",
        str(FIXTURES / config_name),
        "--json",
    ]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {key: count for key, count in counts.items() if count}


def test_wide_fixture_replay_counts() -> None:
    report = run_replay("pintu_air_lebar.csv", "pintu_air_lebar.yaml")
    readings = report["readings"]
    alerts = report["alerts"]

    # 11 rows x 2 gauges. Hulu "-" (02.00), Hulu "NaN" (08.00) and the empty Hilir cell (03.00)
    # are missing. "#VALUE!" is not a number, and the row at 99.00 has no valid time.
    assert readings["accepted"] == 16
    assert readings["duplicate"] == 0
    assert readings["late"] == 0
    assert readings["rejected"] == 6
    assert nonzero(readings["rejected_by_reason"]) == {
        "missing_value": 3,
        "not_a_number": 1,
        "invalid_timestamp": 2,
    }

    # siaga-3: Hulu is at or above 150 from 01.00 (150 counts) to 06.00 and below at 07.00.
    # Hilir reaches 501 at 06.00 and drops to 490 at 07.00. Two alerts, both resolved.
    assert alerts["opened_by_rule"].get("siaga-3", 0) == 2
    assert alerts["resolved_by_rule"].get("siaga-3", 0) == 2
    # siaga-3-bertahan (2 h): Hulu, true since 01.00, fires when the clock reaches 03.00 and
    # resolves at 07.00. Hilir's 490 at 07.00 cancels its pending start from 06.00.
    assert alerts["opened_by_rule"].get("siaga-3-bertahan", 0) == 1
    assert alerts["resolved_by_rule"].get("siaga-3-bertahan", 0) == 1
    assert alerts["opened"] == 3
    assert alerts["resolved"] == 3


def test_long_fixture_replay_counts() -> None:
    report = run_replay("tma_panjang.csv", "tma_panjang.yaml")
    readings = report["readings"]
    alerts = report["alerts"]

    # 23 rows, one of them an exact repeat (PA. Hulu 00:30). Rejected are Hilir "-" and the short
    # Hilir row (missing), "Pompa Baru" (unknown), "rusak" (not a number), 25000 (above max
    # 20000) and hour 25.
    assert readings["accepted"] == 16
    assert readings["duplicate"] == 1
    assert readings["late"] == 0
    assert readings["rejected"] == 6
    assert nonzero(readings["rejected_by_reason"]) == {
        "missing_value": 2,
        "unknown_device": 1,
        "not_a_number": 1,
        "out_of_range": 1,
        "invalid_timestamp": 1,
    }

    # siaga-3 in event order: Hulu fires at 00:30 and stays open. Tengah fires at 00:15 (the
    # row placed late in the file) and resolves at 03:30. Hilir fires at 01:00, resolves at
    # 01:30 and fires again at 03:00, staying open.
    assert alerts["opened_by_rule"].get("siaga-3", 0) == 4
    assert alerts["resolved_by_rule"].get("siaga-3", 0) == 2
    # siaga-2 (1 h): Tengah's 2600 at 00:30 is cancelled by 2400 at 01:00. Hulu's 1600 at 01:00
    # fires when Tengah's 02:00 reading moves the clock, and resolves at 02:30. Tengah's 2700 at
    # 02:00 fires at 03:00 before its own 2450 there resolves it. Hulu's 1550 at 03:30 is still
    # pending when the file ends.
    assert alerts["opened_by_rule"].get("siaga-2", 0) == 2
    assert alerts["resolved_by_rule"].get("siaga-2", 0) == 2
    assert alerts["opened"] == 6
    assert alerts["resolved"] == 4


def test_jsonl_fixture_replay_counts() -> None:
    report = run_replay("ispu_harian.jsonl", "ispu_harian.yaml")
    readings = report["readings"]
    alerts = report["alerts"]

    # 15 objects x 2 metrics, with one repeated object (DKI1 2023-01-04). Missing: pm25 "-",
    # "---", null and an absent key, and max "TIDAK ADA DATA". max 0 is below min 1. DKI2 is
    # not registered, "06-01-2023" is not a date in the configured format, "sensor rusak" is text.
    assert readings["accepted"] == 17
    assert readings["duplicate"] == 2
    assert readings["late"] == 0
    assert readings["rejected"] == 11
    assert nonzero(readings["rejected_by_reason"]) == {
        "missing_value": 5,
        "out_of_range": 1,
        "unknown_device": 2,
        "invalid_timestamp": 2,
        "not_a_number": 1,
    }

    # tidak-sehat (above 100): DKI1 fires on 150 (01-03) and resolves on 90 (01-06). DKI5 fires
    # on 112 (01-01), stays open over the rejected 0 and on 101, and resolves on 100 (01-05).
    assert alerts["opened_by_rule"].get("tidak-sehat", 0) == 2
    assert alerts["resolved_by_rule"].get("tidak-sehat", 0) == 2
    # sangat-tidak-sehat (above 200): DKI1 210.5 on 01-04, resolved by 180 on 01-05.
    assert alerts["opened_by_rule"].get("sangat-tidak-sehat", 0) == 1
    assert alerts["resolved_by_rule"].get("sangat-tidak-sehat", 0) == 1
