"""End to end against a real Home Assistant 2024.3.3 and a real hub process.

Home Assistant runs from the environment that tests/peers/home_assistant/install.sh makes (`.ci/run`
runs it), with the config beside that script: an input_number is the stand-in water-level
sensor and a template switch over an input_boolean is the pump, and a counter counts the
service calls that arrive. The tests skip when that environment is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub_peers import GATEWAY_SOURCE, Hub, wait_for
from tests.peers.home_assistant.peer import VERSION, HomeAssistantPeer, installed

pytestmark = pytest.mark.skipif(
    not installed(),
    reason=f"Home Assistant {VERSION} is not installed: run `bash tests/peers/home_assistant/install.sh` "
    "(.ci/run does) to run the end-to-end tests against it",
)

TOKEN_ENV = "SIMPUL_TEST_HA_TOKEN"
LEVEL = "input_number.tinggi_air_manggarai"
PUMP = "switch.pompa_manggarai"
COUNTER = "counter.panggilan_simpul"
# Long enough for a second copy of a service call to arrive if one were sent.
QUIET_SECONDS = 3.0

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: 0, max: 2000}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level, tags: [hulu]}
  - {id: katulampa, name: Bendung Katulampa, agency: dinas-sda, kind: water_level, tags: [hulu]}
sources:
  - id: ha-rumah-pompa
    type: home_assistant
    url: __URL__
    token: ${SIMPUL_TEST_HA_TOKEN}
    entities:
      - {entity_id: input_number.tinggi_air_manggarai, device: manggarai, metric: level}
__GATEWAY__rules:
  - id: manggarai-pompa
    name: Nyalakan pompa Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - home_assistant: {source: ha-rumah-pompa, service: switch.turn_on, entity_id: switch.pompa_manggarai}
      - home_assistant: {source: ha-rumah-pompa, service: counter.increment, entity_id: counter.panggilan_simpul}
  - id: hulu-siaga
    name: Siaga di hulu
    agency: dinas-sda
    when: {tag: hulu, metric: level, above: 850}
    then:
      - home_assistant: {source: ha-rumah-pompa, service: counter.increment, entity_id: counter.panggilan_simpul}
"""


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistantPeer]:
    peer = HomeAssistantPeer(tmp_path_factory.mktemp("home-assistant"))
    peer.prepare()
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def hub(home_assistant: HomeAssistantPeer, tmp_path: Path) -> Iterator[Hub]:
    """The hub on the real Home Assistant, started with the pump off and the level at 700."""
    home_assistant.call("switch.turn_off", entity_id=PUMP)
    home_assistant.call("input_number.set_value", entity_id=LEVEL, value=700)
    config = CONFIG.replace("__URL__", home_assistant.ws_url).replace("__GATEWAY__", GATEWAY_SOURCE)
    running = Hub.start(tmp_path, config, env={TOKEN_ENV: home_assistant.token})
    try:
        wait_for(lambda: source_health(running)["connected"], what="the hub to connect to Home Assistant")
        yield running
    finally:
        running.stop()
    assert home_assistant.token not in running.log()


def source_health(hub: Hub) -> dict[str, object]:
    state: dict[str, object] = hub.health()["sources"]["ha-rumah-pompa"]
    return state


def service_calls_health(hub: Hub) -> dict[str, object]:
    state: dict[str, object] = hub.health()["actions"]["home_assistant"]
    return state


def counter(peer: HomeAssistantPeer) -> int:
    return int(peer.state(COUNTER))


def test_high_level_turns_pump_on(home_assistant: HomeAssistantPeer, hub: Hub) -> None:
    calls_before = counter(home_assistant)
    assert home_assistant.state(PUMP) == "off"

    home_assistant.call("input_number.set_value", entity_id=LEVEL, value=912)

    wait_for(lambda: home_assistant.state(PUMP) == "on", what="Home Assistant to turn the pump on")
    runs = hub.wait_for_runs(2)
    assert [(run.target, run.status, run.attempts) for run in runs] == [
        ("ha-rumah-pompa:switch.turn_on", "succeeded", 1),
        ("ha-rumah-pompa:counter.increment", "succeeded", 1),
    ]
    assert [(alert.rule_id, alert.device_id, alert.value) for alert in hub.alerts()] == [
        ("manggarai-pompa", "manggarai", "912")
    ]
    levels = [(reading.source_id, reading.value_num) for reading in hub.readings()]
    assert levels == [("ha-rumah-pompa", 700.0), ("ha-rumah-pompa", 912.0)]
    time.sleep(QUIET_SECONDS)
    assert counter(home_assistant) == calls_before + 1
    assert service_calls_health(hub)["healthy"] is True


def test_restart_delivers_each_call_once(home_assistant: HomeAssistantPeer, hub: Hub) -> None:
    calls_before = counter(home_assistant)
    home_assistant.call("input_number.set_value", entity_id=LEVEL, value=900)
    hub.wait_for_runs(2)

    # 1. Home Assistant goes away; readings keep coming through the gateway and fire rules whose
    #    service calls wait in the outbox.
    home_assistant.stop()
    wait_for(lambda: source_health(hub)["connected"] is False, what="the source to notice the stop")
    for device in ("depok", "katulampa"):
        hub.post(device, "level", 700)
        hub.post(device, "level", 905)
    wait_for(
        lambda: [run.status for run in hub.runs() if run.rule_id == "hulu-siaga"] == ["failed", "failed"],
        what="the service calls to fail while Home Assistant is away",
    )
    assert service_calls_health(hub)["healthy"] is False
    assert source_health(hub)["healthy"] is False

    # 2. Home Assistant comes back: the calls go out once each, and the feed reconnects.
    home_assistant.start()
    runs = hub.wait_for_runs(4)
    assert {run.status for run in runs} == {"succeeded"}
    wait_for(lambda: source_health(hub)["connected"] is True, what="the source to reconnect")
    assert int(str(source_health(hub)["reconnects"])) >= 1
    wait_for(lambda: service_calls_health(hub)["healthy"] is True, what="the service calls to report healthy")

    # 3. Readings from Home Assistant flow again after the restart and fire the rule again.
    home_assistant.call("input_number.set_value", entity_id=LEVEL, value=700)
    wait_for(
        lambda: [reading.value_num for reading in hub.readings() if reading.device_id == "manggarai"].count(700.0) == 2,
        what="the reading taken after the restart",
    )
    home_assistant.call("switch.turn_off", entity_id=PUMP)
    home_assistant.call("input_number.set_value", entity_id=LEVEL, value=950)
    wait_for(lambda: home_assistant.state(PUMP) == "on", what="Home Assistant to turn the pump on again")
    runs = hub.wait_for_runs(6)
    assert {run.status for run in runs} == {"succeeded"}

    time.sleep(QUIET_SECONDS)
    assert counter(home_assistant) == calls_before + 4
    manggarai = [alert for alert in hub.alerts() if alert.device_id == "manggarai"]
    assert [alert.value for alert in manggarai] == ["900", "950"]
    assert len(hub.runs()) == 6
