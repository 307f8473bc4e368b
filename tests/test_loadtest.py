"""`dps loadtest`: its accounting, options and client protocol without a server, then small
runs against a real embedded server (as a subprocess, `python -m app.tools.loadtest`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.speedups import apply_mask

from app.tools.loadtest import add_parser, cluster, options, plot, run, worker
from app.tools.loadtest.options import OptionError, Target, add_arguments, from_args, parse_target
from app.tools.loadtest.reconnect import Reconnects
from app.tools.loadtest.scenarios import ConnSpec, busiest_topic, connections, plans
from app.tools.loadtest.session import LoadSession
from app.tools.loadtest.stats import (
    WorkerResult,
    build_report,
    combine,
    counter_deltas,
    deliver_frames_per_publish,
    expected_deliveries,
    percentiles,
)
from app.tools.loadtest.tally import Tally, by_topic
from app.tools.loadtest.websocket import accept_key
from tests.support import ROOT, Server, free_port

pytestmark = pytest.mark.anyio

# -- accounting ---------------------------------------------------------------------------


def test_in_order_deliveries_are_unique_and_nothing_else() -> None:
    tally = Tally([0, 0], slots=2, epoch_ns=0)
    for seq in (1, 2, 3):
        tally.observe(0, 0, seq)
        tally.observe(0, 1, seq)
        tally.observe(1, 1, seq)
    assert list(tally.unique) == [6, 3]
    assert (tally.duplicates, tally.out_of_order) == (0, 0)


def test_a_repeated_message_is_a_duplicate() -> None:
    tally = Tally([0], slots=1, epoch_ns=0)
    for seq in (1, 2, 2, 1, 3):
        tally.observe(0, 0, seq)
    assert tally.unique[0] == 3
    assert (tally.duplicates, tally.out_of_order) == (2, 0)


def test_a_late_message_is_out_of_order_once_and_then_a_duplicate() -> None:
    tally = Tally([0], slots=1, epoch_ns=0)
    for seq in (1, 5, 3, 2, 4, 3, 6):
        tally.observe(0, 0, seq)
    assert tally.unique[0] == 6
    assert tally.out_of_order == 3  # 3, 2 and 4 came after 5
    assert tally.duplicates == 1  # the second 3
    assert tally.gaps == {}  # every hole was filled


def test_a_gap_that_is_never_filled_is_lost_at_the_end() -> None:
    tally = Tally([0], slots=1, epoch_ns=0)
    for seq in (1, 2, 6, 7):
        tally.observe(0, 0, seq)
    assert tally.unique[0] == 4
    assert expected_deliveries([1], [7]) - tally.unique[0] == 3
    assert tally.gaps == {0: [[3, 6]]}


def test_sequences_are_kept_per_subscription_and_publisher_slot() -> None:
    tally = Tally([0, 1], slots=2, epoch_ns=0)
    tally.observe(0, 0, 1)
    tally.observe(0, 1, 1)  # another publisher: not a duplicate
    tally.observe(1, 0, 1)  # another subscription: not a duplicate
    assert (tally.duplicates, tally.out_of_order) == (0, 0)
    assert tally.caught_up([1, 1], {}) is True  # no subscription is open: nothing to wait for
    tally.open[1] = tally.joined[1] = 1
    assert tally.caught_up([0, 2], {}) is False
    assert tally.caught_up([0, 1], {}) is True


def test_lost_counts_only_acknowledged_publishes_a_subscription_never_got() -> None:
    tally = Tally([0, 0], slots=2, epoch_ns=0)
    tally.open[0] = tally.open[1] = tally.joined[0] = tally.joined[1] = 1
    # Slot 0 published 1..5; 3 and 5 were answered with an error (or not at all).
    unconfirmed = by_topic([(0, 0, 3), (0, 0, 5)])
    for seq in (1, 2, 3, 4):  # 3 arrived anyway: not acknowledged, so not counted
        tally.observe(0, 0, seq)
    for seq in (1, 2):  # 4 never came: lost
        tally.observe(1, 0, seq)
    assert unconfirmed == {0: [(0, 3), (0, 5)]}
    assert [tally.received(0, 0, seq) for seq in (1, 3, 5)] == [True, True, False]
    assert tally.unique_acknowledged(0, unconfirmed) == 3
    assert tally.unique_acknowledged(1, unconfirmed) == 2
    acked = [5 - 2]
    assert tally.caught_up(acked, unconfirmed) is False  # subscription 1 still waits for 4
    assert expected_deliveries([2], acked) - 3 - 2 == 1
    tally.observe(1, 0, 4)
    assert tally.caught_up(acked, unconfirmed) is True
    tally.observe(1, 0, 6)  # a gap: 5 is missing, but it was never acknowledged
    assert not tally.received(1, 0, 5) and tally.unique_acknowledged(1, unconfirmed) == 4


def test_batches_fill_the_timeline_and_bound_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.tools.loadtest.tally.MAX_SAMPLES", 4)
    tally = Tally([0], slots=1, epoch_ns=1_000_000_000)
    tally.latencies.extend(range(5))
    tally.batch(1_000_000_000 + 250_000_000, 5)
    assert tally.delivered == 5
    assert list(tally.timeline) == [0, 0, 5]
    assert list(tally.latencies) == [0, 2, 4]
    assert tally.sample_mask == 1


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    samples = [i * 1_000_000 for i in range(1, 1001)]  # 1 .. 1000 ms
    assert percentiles(reversed(samples)) == {
        "p50": 500.0,
        "p90": 900.0,
        "p99": 990.0,
        "p999": 999.0,
        "max": 1000.0,
        "samples": 1000,
    }
    assert percentiles([]) == {
        "p50": 0.0,
        "p90": 0.0,
        "p99": 0.0,
        "p999": 0.0,
        "max": 0.0,
        "samples": 0,
    }
    assert percentiles([3_000_000])["p50"] == percentiles([3_000_000])["max"] == 3.0


def _phase(*argv: str) -> Any:
    return from_args(_parse(*argv)).phases[0]


def test_report_counts_loss_and_passes_within_max_loss() -> None:
    phase = _phase("--topics", "2", "--max-loss", "5")
    a = WorkerResult(0, opened=3, joined_per_topic=[2, 1], unique=25, delivered=26, duplicates=1)
    a.sent_per_topic = [10, 0]
    b = WorkerResult(1, opened=1, joined_per_topic=[0, 1], unique=4, delivered=4)
    b.sent_per_topic = [0, 5]
    b.errors = {"closed_1013": 1}
    report = build_report(phase, [a, b], {}, 0.5, interrupted=False)
    assert report["expected"] == 2 * 10 + 2 * 5
    assert (report["delivered"], report["unique"], report["lost"]) == (30, 29, 1)
    assert report["duplicates"] == 1
    assert report["messages"] == 0  # what the workers published (sent), not the quota
    assert report["errors"] == {"closed_1013": 1}
    assert report["failures"] == 2
    assert report["passed"] is True
    strict = build_report(_phase("--topics", "2"), [a, b], {}, 0.0, interrupted=False)
    assert strict["passed"] is False
    interrupted = build_report(phase, [a, b], {}, 0.0, interrupted=True)
    assert interrupted["passed"] is False


def test_failed_and_dropped_connections_are_failures() -> None:
    result = WorkerResult(0, opened=2, failed=3, dropped=1)
    report = build_report(_phase("--scenario", "connect"), [result], {}, 0.0, False)
    assert report["connections"] | {"per_s": 0} == {
        "planned": 100,
        "opened": 2,
        "failed": 3,
        "dropped": 1,
        "per_s": 0,
    }
    assert report["failures"] == 4


def test_unacknowledged_publishes_are_failures_unless_the_phase_kills_their_owner() -> None:
    result = WorkerResult(0, opened=2, joined_per_topic=[1], unique=8, delivered=9)
    result.sent_per_topic = [10]
    result.unconfirmed = {0: [(0, 4), (0, 9)]}  # two publishes never acknowledged
    result.reconnects, result.recovered, result.recoveries_failed = 5, 7, 1
    report = build_report(_phase("--reconnect-every", "1"), [result], {}, 0.0, False)
    assert report["messages"] == 0 and report["unacknowledged"] == 2
    assert (report["expected"], report["unique"], report["lost"]) == (8, 8, 0)
    assert (report["reconnect_every"], report["reconnects"], report["recovered"]) == (1.0, 5, 7)
    assert report["recoveries_failed"] == 1
    assert report["failures"] == 2 + 1
    killed = {"node": "ts-a", "pid": 1, "topic": "loadtest:0", "after_s": 1.0}
    killing = _phase("--kill-owner-after", "1", "--local-cluster")
    result.recoveries_failed = 0
    report = build_report(killing, [result], {}, 0.0, False, killed=killed)
    assert (report["killed"], report["failures"], report["passed"]) == (killed, 0, True)
    missed = build_report(killing, [result], {}, 0.0, False)  # publishing ended first
    assert missed["killed"] is None and missed["failures"] == 1
    assert missed["errors"] == {"owner_not_killed: publishing ended first": 1}
    total = combine("file.toml", [report, missed], [result, result])
    assert (total["unacknowledged"], total["reconnects"], total["recovered"]) == (4, 10, 14)
    assert total["recoveries_failed"] == 0 and total["failures"] == 1


def test_node_counters_give_deliver_frames_per_publish() -> None:
    before = {"a": {"publishes": 10, "gateway_deliveries_sent": 10}, "b": {"publishes": 0}}
    after = {"a": {"publishes": 110, "gateway_deliveries_sent": 310}, "c": {"publishes": 5}}
    deltas = counter_deltas(before, after)
    assert deltas == {"a": {"publishes": 100, "gateway_deliveries_sent": 300}}
    assert deliver_frames_per_publish(deltas) == 3.0
    assert deliver_frames_per_publish({}) is None


# -- options ------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    "url",
    ["ws://10.0.0.1:4000", "ws://example.com:4000", "ws://0.0.0.0:4000", "ws://[::2]:4000"],
)
def test_non_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(OptionError, match="not a loopback host"):
        from_args(_parse("--url", url))
    with pytest.raises(OptionError, match="not a loopback host"):
        from_args(_parse("--node", url))


def test_run_exits_2_on_a_remote_target(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="dps")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["loadtest", "--url", "ws://192.0.2.1:4000"])
    assert run(args) == 2
    assert "not a loopback host" in capsys.readouterr().err


def test_targets_get_the_socket_path_and_vsn() -> None:
    assert parse_target("ws://127.0.0.1:4010", "--url") == Target(
        "127.0.0.1", 4010, "/socket/websocket?vsn=2.0.0"
    )
    ipv6 = parse_target("http://[::1]:4010/socket/websocket?token=a&vsn=2.0.1", "--url")
    assert ipv6.url == "ws://[::1]:4010/socket/websocket?token=a&vsn=2.0.1"
    assert ipv6.cluster_url == "http://[::1]:4010/cluster"
    with pytest.raises(OptionError, match=r"vsn=1\.0\.0"):
        parse_target("ws://localhost:4010/socket/websocket?vsn=1.0.0", "--url")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--subscribers", "0", "--scenario", "chat"], "subscribers"),
        (["--topics", "0"], "topics"),
        (["--publishers", "0"], "publishers"),
        (["--rate", "-1"], "rate"),
        (["--window", "0"], "window"),
        (["--duration", "0"], "duration"),
        (["--procs", "0"], "procs"),
        (["--max-loss", "-1"], "max-loss"),
        (["--payload-bytes", "-5"], "payload-bytes"),
        (["--reconnect-every", "-1"], "reconnect-every"),
        (["--reconnect-every", "5", "--scenario", "chat"], "reconnect-every"),
        (["--kill-owner-after", "1", "--scenario", "connect", "--local-cluster"], "kill-owner"),
        (["--scenario", "churn"], "rate"),
        (["--scenario", "churn", "--rate", "5", "--messages", "9"], "messages"),
        (
            [
                "--scenario",
                "churn",
                "--rate",
                "5",
                "--protocol",
                "socketio",
                "--url",
                "ws://[::1]:1",
            ],
            "protocol",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=f"--{message}"):
        from_args(_parse(*argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kill-owner-after", "2"], "add --local-cluster"),
        (["--local-cluster", "--url", "ws://127.0.0.1:4000"], "drop --url"),
        (["--local-cluster", "--node", "http://127.0.0.1:5000"], "drop --node"),
        (["--local-cluster", "--channels", "/nonexistent.toml"], "no such file"),
        (["--channels", "app/tools/loadtest/channels.toml"], "for --local-cluster"),
    ],
)
def test_the_local_cluster_is_the_only_one_killed_in(argv: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        from_args(_parse(*argv))


def test_only_one_phase_may_kill_a_topic_server(tmp_path: Path) -> None:
    path = tmp_path / "kills.toml"
    path.write_text("[defaults]\nkill-owner-after = 1\n[[phase]]\n[[phase]]\nname = 'again'\n")
    with pytest.raises(OptionError, match="again: only one phase"):
        from_args(_parse("--scenario-file", str(path), "--local-cluster"))


def test_a_local_cluster_run_takes_its_channels_file() -> None:
    default = from_args(_parse("--local-cluster", "--reconnect-every", "2"))
    assert default.local_cluster and default.channels == ROOT / "app/tools/loadtest/channels.toml"
    assert default.phases[0].reconnect_every == 2.0
    assert "history_size" in default.channels.read_text()
    own = from_args(_parse("--local-cluster", "--channels", str(ROOT / "ring.toml")))
    assert own.channels == ROOT / "ring.toml"


def test_defaults() -> None:
    phase = _phase()
    assert (phase.scenario, phase.subscribers, phase.topics, phase.publishers) == (
        "fanout",
        100,
        1,
        1,
    )
    assert (phase.messages, phase.duration, phase.rate, phase.max_loss) == (1000, None, 0.0, 0)
    assert [t.url for t in phase.targets] == ["ws://127.0.0.1:4000/socket/websocket?vsn=2.0.0"]
    assert _phase("--scenario", "connect").duration == 5.0


def test_plot_without_matplotlib_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(OptionError, match=r"pip install -e '\.\[plot\]' in the DPS checkout"):
        from_args(_parse("--plot", "out.png"))


def test_the_plot_title_names_the_scenario_and_its_parameters(tmp_path: Path) -> None:
    run = from_args(_parse("--subscribers", "2000", "--procs", "2", "--messages", "500"))
    assert plot.title(run) == (
        "fanout, 1 topic, 2,000 subscribers, 1 publisher, max rate (window 16), "
        "500 messages, 100-byte payloads, 2 client processes"
    )
    path = tmp_path / "two.toml"
    path.write_text(
        '[[phase]]\nname = "idle"\nscenario = "connect"\nsubscribers = 10\n'
        '[[phase]]\nname = "steady"\nrate = 5\nduration = 10\n'
    )
    assert plot.title(from_args(_parse("--scenario-file", str(path)))).splitlines() == [
        str(path),
        "idle: connect, 10 subscribers, held 5 s, 1 client process",
        "steady: fanout, 1 topic, 100 subscribers, 1 publisher, 5 msg/s, 10 s, "
        "100-byte payloads, 1 client process",
    ]


def test_scenario_file_phases_take_defaults_then_their_own_then_the_command_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(
        """
        [defaults]
        url = "ws://127.0.0.1:4001"
        procs = 2
        duration = 3

        [[phase]]
        name = "idle"
        scenario = "connect"
        subscribers = 50

        [[phase]]
        scenario = "fanout"
        payload-bytes = 64
        messages = 10
        """
    )
    run = from_args(_parse("--scenario-file", str(path), "--procs", "3"))
    idle, fan = run.phases
    assert (idle.name, idle.scenario, idle.subscribers, idle.duration) == ("idle", "connect", 50, 3)
    assert (fan.name, fan.payload_bytes, fan.messages, fan.duration) == ("phase 2", 64, 10, None)
    assert idle.procs == fan.procs == 3
    assert fan.targets[0].port == 4001
    again = from_args(_parse("--scenario-file", str(path), "--messages", "7"))
    assert [p.messages for p in again.phases] == [7, 7]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[phase]]\nsubscriber = 3\n", "unknown option 'subscriber'"),
        ("[[phase]]\nsubscribers = 'many'\n", "is not an integer"),
        ("[[phase]]\nscenario = 'storm'\n", "scenario 'storm'"),
        ("[[phase]]\nmessages = 1\nduration = 1\n", "not both"),
        ("[phases]\n", "unknown table 'phases'"),
        ("[defaults]\n", "one or more"),
        ("[[phase]\n", "not valid TOML"),
    ],
)
def test_bad_scenario_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(OptionError, match=message):
        from_args(_parse("--scenario-file", str(path)))


# -- scenarios ----------------------------------------------------------------------------


def test_fanout_spreads_subscribers_and_gives_every_topic_a_publisher() -> None:
    specs, slots = connections(
        _phase("--subscribers", "6", "--topics", "3", "--publishers", "2", "--messages", "11")
    )
    subscribers, publishers = specs[:6], specs[6:]
    assert [s.topics for s in subscribers] == [(0,), (1,), (2,), (0,), (1,), (2,)]
    spread = _phase(
        "--subscribers", "8", "--topics", "2", "--url", "ws://[::1]:1", "--url", "ws://[::1]:2"
    )
    by_topic = [(s.topics[0], s.target) for s in connections(spread)[0][:8]]
    assert sorted(by_topic) == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)]
    assert [(p.topics, p.slot, p.quota) for p in publishers] == [((0, 2), 0, 6), ((1,), 0, 5)]
    assert slots == 1
    specs, slots = connections(_phase("--subscribers", "0", "--topics", "2", "--publishers", "5"))
    assert [(p.topics, p.slot) for p in specs] == [
        ((0,), 0),
        ((1,), 0),
        ((0,), 1),
        ((1,), 1),
        ((0,), 2),
    ]
    assert slots == 3


def test_the_busiest_topic_has_the_most_deliveries_planned() -> None:
    # One subscriber each; publisher 0 shares its messages over topics 0 and 2, publisher
    # 1 sends all of its own to topic 1.
    assert busiest_topic(_phase("--subscribers", "3", "--topics", "3", "--publishers", "2")) == 1
    # Topic 0 has a third subscriber: 4 sockets x 500 messages beat 3 x 500.
    assert busiest_topic(_phase("--subscribers", "5", "--topics", "2", "--publishers", "2")) == 0
    # By duration, each publisher's share is equal: topic 1's publisher has it alone.
    by_time = _phase("--subscribers", "4", "--topics", "3", "--publishers", "2", "--duration", "1")
    assert busiest_topic(by_time) == 1
    assert busiest_topic(_phase("--topics", "4", "--publishers", "4")) == 0  # the first of equals


def test_each_subscriber_drops_once_in_every_period_at_its_own_moment() -> None:
    draws = iter([0.5, 0.125, 0.875, 0.0, 0.25, 0.75])
    schedule = Reconnects(2, start_ns=10_000, period_ns=1000, draw=lambda: next(draws))
    # Subscriber 0 at 10,500 and subscriber 1 at 10,125; then each in its next period.
    assert schedule.next_ns() == 10_125
    assert schedule.due(10_124) == []
    assert schedule.due(10_125) == [1]  # its next: 10,000 + (1 + 0.875) x 1000
    assert schedule.next_ns() == 10_500
    assert schedule.due(12_000) == [0, 0, 1]  # at 10,500, 11,000 (period 1 + 0.0), 11,875
    assert schedule.next_ns() == 12_250  # subscriber 0 in period 2 (+ 0.25)
    assert schedule.due(12_249) == []
    assert Reconnects(0, 0, 1000, lambda: 0.5).next_ns() is None


def test_chat_clients_publish_to_their_room_and_targets_alternate() -> None:
    phase = _phase(
        "--scenario", "chat", "--subscribers", "5", "--topics", "2", "--rate", "10",
        "--url", "ws://127.0.0.1:1", "--url", "ws://localhost:2",
    )  # fmt: skip
    specs, slots = connections(phase)
    assert [(s.target, s.topics, s.slot) for s in specs] == [
        (0, (0,), 0),
        (0, (1,), 0),
        (1, (0,), 1),
        (1, (1,), 1),
        (0, (0,), 2),
    ]  # every room has clients on both gateways
    assert slots == 3
    assert sum(s.quota or 0 for s in specs) == 1000
    assert {s.rate for s in specs} == {2.0}
    split = plans(phase, 0)
    assert [len(p.conns) for p in split] == [5]
    split = plans(_phase("--scenario", "connect", "--subscribers", "5", "--procs", "2"), 0)
    assert [len(p.conns) for p in split] == [3, 2]


def test_connect_clients_join_their_topic_spread_over_the_targets() -> None:
    phase = _phase(
        "--scenario", "connect", "--subscribers", "4", "--topics", "2",
        "--url", "ws://127.0.0.1:1", "--url", "ws://127.0.0.1:2",
    )  # fmt: skip
    specs, _ = connections(phase)
    assert [(s.target, s.topics, s.slot) for s in specs] == [
        (0, (0,), -1),
        (0, (1,), -1),
        (1, (0,), -1),
        (1, (1,), -1),
    ]


@pytest.mark.parametrize(
    ("addresses", "url", "problem"),
    [
        ("10.0.0.2", "ws://127.0.0.1:1", "not a loopback address"),
        ("example.com", "ws://127.0.0.1:1", "not a loopback address"),
        ("127.0.0.2", "ws://[::1]:1", "not of the family of the target ::1 (IPv6)"),
        ("::1", "ws://127.0.0.1:1", "not of the family of the target 127.0.0.1 (IPv4)"),
    ],
)
def test_source_addresses_are_loopback_of_the_targets_family(
    addresses: str, url: str, problem: str
) -> None:
    with pytest.raises(OptionError, match=re.escape(problem)):
        _phase("--url", url, "--source-addresses", addresses)


def test_more_connections_than_one_address_has_ports_need_more_source_addresses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ports = tmp_path / "ip_local_port_range"
    ports.write_text("1000\t1099\n")  # 100 ephemeral ports
    monkeypatch.setattr(options, "PORT_RANGE", ports)
    many = ("--scenario", "connect", "--connections", "250")
    with pytest.raises(
        OptionError,
        match=r"250 connections from one address to one target .*"
        r"100 ephemeral ports .*--source-addresses 127.0.0.2",
    ):
        _phase(*many)
    with pytest.raises(OptionError, match="125 connections from one address"):
        _phase(*many, "--source-addresses", "127.0.0.2,127.0.0.3")
    phase = _phase(*many, "--source-addresses", "127.0.0.2,127.0.0.3,127.0.0.4")
    assert phase.source_addresses == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert (
        _phase(
            *many,
            "--url",
            "ws://127.0.0.1:1",
            "--url",
            "ws://127.0.0.1:2",
            "--url",
            "ws://127.0.0.1:3",
        ).connections
        == 250
    )  # 84 per target


def test_connection_c_of_a_phase_comes_from_source_c_mod_n() -> None:
    phase = _phase("--scenario", "connect", "--connections", "12", "--procs", "3",
                   "--source-addresses", "127.0.0.2,127.0.0.3")  # fmt: skip
    used: dict[int, str] = {}
    for plan in plans(phase, 0):
        one = worker.Worker.__new__(worker.Worker)  # only what _source reads
        one.plan, one.phase = plan, phase
        for started in range(len(plan.conns)):
            used[plan.worker + started * phase.procs] = one._source(started) or ""
    assert used == {c: f"127.0.0.{2 + c % 2}" for c in range(12)}


async def test_a_connection_from_a_source_address_comes_from_it() -> None:
    peers: list[str] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for source in ("127.0.0.3", "127.0.0.4", None):
            protocol = asyncio.Protocol()
            await worker._connect(protocol, "127.0.0.1", port, source)  # type: ignore[arg-type]
        for _ in range(100):
            if len(peers) == 3:
                break
            await asyncio.sleep(0.01)
    assert peers == ["127.0.0.3", "127.0.0.4", "127.0.0.1"]


def test_server_processes_count_with_their_descendants() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stats = cluster._stats()
        assert child.pid in cluster._with_descendants([os.getpid()], stats)
        alone = int(stats[os.getpid()][21]) * cluster.PAGE
        together = cluster.rss_bytes([os.getpid()])
        assert together is not None and together > alone
        cpu = cluster.cpu_seconds([os.getpid()])
        assert cpu is not None and cpu > 0
    finally:
        child.kill()
        child.wait()
    assert cluster.rss_bytes([child.pid]) is None  # gone: no partial sum


def test_churn_clients_join_with_a_presence_and_workers_share_the_rate() -> None:
    phase = _phase("--scenario", "churn", "--subscribers", "5", "--rate", "30", "--procs", "3")
    assert phase.duration == 5.0
    specs, slots = connections(phase)
    assert [(s.topics, s.slot, s.presence) for s in specs] == [((0,), -1, True)] * 5
    assert slots == 1
    assert [(len(p.conns), p.churn) for p in plans(phase, 0)] == [(2, 10.0), (2, 10.0), (1, 10.0)]
    assert {p.churn for p in plans(_phase(), 0)} == {0.0}


# -- the client protocol, fed bytes -------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def take(self) -> list[tuple[int, bytes]]:
        """The client's frames written so far: (opcode, unmasked payload)."""
        frames, data, self.written = [], self.written, b""
        while data:
            assert data[1] & 0x80, "client frames must be masked"
            size, head = data[1] & 0x7F, 2
            if size == 126:
                size, head = struct.unpack("!H", data[2:4])[0], 4
            key = data[head : head + 4]
            payload = apply_mask(data[head + 4 : head + 4 + size], key)
            frames.append((data[0] & 0x0F, payload))
            data = data[head + 4 + size :]
        return frames


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def ok_reply(ref: str) -> bytes:
    return server_frame(
        orjson.dumps(["1", ref, "loadtest:0", "phx_reply", {"status": "ok", "response": {}}])
    )


def delivery(topic: str, slot: int, seq: int, pad: int = 0, position: str | None = None) -> bytes:
    body = {"m": f"{slot}:{seq}:{time.monotonic_ns()}", "p": "x" * pad}
    return orjson.dumps(["1", position, topic, "load", body])


def join_reply(ref: str, response: dict[str, Any]) -> bytes:
    return server_frame(
        orjson.dumps(["1", ref, "loadtest:0", "phx_reply", {"status": "ok", "response": response}])
    )


def arrivals(session: LoadSession, *seqs: int, epoch: str = "e1") -> None:
    """Deliveries of publisher slot 0 whose offsets are their sequence numbers."""
    for seq in seqs:
        position = f"{epoch}:{seq}"
        session.data_received(server_frame(delivery("loadtest:0", 0, seq, position=position)))


def open_session(
    spec: ConnSpec, window: int = 64, tally: Tally | None = None, **options: Any
) -> tuple[LoadSession, Tally, FakeTransport, list[str]]:
    if tally is None:
        tally = Tally(list(spec.topics), slots=2, epoch_ns=time.monotonic_ns())
    settled: list[str] = []
    session = LoadSession(
        Target("127.0.0.1", 1, "/socket/websocket?vsn=2.0.0"),
        spec,
        0,
        tally,
        payload_bytes=60,
        window=window,
        on_change=lambda: settled.append("settled"),
        **options,
    )
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    request = transport.written.decode()
    transport.written = b""
    assert request.startswith("GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n")
    assert "Sec-WebSocket-Version: 13" in request
    accept = accept_key(session.key).decode()
    session.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        + f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    return session, tally, transport, settled


def test_a_subscriber_joins_and_accounts_deliveries_fed_in_any_pieces() -> None:
    session, tally, transport, settled = open_session(ConnSpec(0, (0,), -1, 0, 0.0))
    assert transport.take() == [(1, b'["1","1","loadtest:0","phx_join",{}]')]
    assert settled == []
    session.data_received(ok_reply("1"))
    assert settled == ["settled"]
    assert tally.joined[0] == 1 and len(tally.joins) == 1
    stream = b"".join(
        server_frame(delivery("loadtest:0", slot, seq, pad))
        for slot, seq, pad in [
            (0, 1, 0),
            (0, 2, 200),
            (1, 1, 70000),
            (0, 2, 0),
            (0, 4, 0),
            (0, 3, 0),
        ]
    )
    for i in range(0, len(stream), 7):  # frames split anywhere, even inside the header
        session.data_received(stream[i : i + 7])
    assert tally.delivered == 6
    assert tally.unique[0] == 5
    assert (tally.duplicates, tally.out_of_order) == (1, 1)
    assert len(tally.latencies) == 6 and min(tally.latencies) > 0
    assert sum(tally.timeline) == 6


def test_pings_are_answered_and_a_close_is_counted_as_a_drop() -> None:
    session, tally, transport, _ = open_session(ConnSpec(0, (), -1, 0, 0.0))
    session.data_received(server_frame(b"hi", opcode=9))
    assert transport.take() == [(10, b"hi")]
    session.data_received(server_frame(struct.pack("!H", 1013) + b"slow consumer", opcode=8))
    assert transport.take() == [(8, struct.pack("!H", 1013))]
    assert transport.closed
    assert tally.dropped == 1
    assert tally.errors == {"closed_1013": 1}


def test_a_refused_handshake_is_a_failed_connection() -> None:
    tally = Tally([], slots=1, epoch_ns=0)
    session = LoadSession(
        Target("127.0.0.1", 1, "/"), ConnSpec(0, (), -1, 0, 0.0), 0, tally, 0, 1, lambda: None
    )
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    session.data_received(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
    assert (tally.failed, tally.opened, dict(tally.errors)) == (1, 0, {"handshake_403": 1})
    assert transport.closed


def presence_push(join_ref: str | None, event: str, payload: bytes) -> bytes:
    head = orjson.dumps([join_ref, None, "loadtest:0", event])[:-1]
    return server_frame(head + b"," + payload + b"]")


def test_a_churn_client_leaves_and_joins_again_and_counts_presence_unparsed() -> None:
    spec = ConnSpec(0, (0,), -1, 0, 0.0, presence=True)
    session, tally, transport, settled = open_session(spec)
    join = b'["1","1","loadtest:0","phx_join",{"presence":{"meta":{"status":"online"}}}]'
    assert transport.take() == [(1, join)]
    session.data_received(ok_reply("1"))
    state = presence_push("1", "presence_state", b'{"k":{"metas":[{"phx_ref":"x"}]}}')
    diff = presence_push(
        None, "presence_diff", b'{"joins":{},"leaves":{"k":[' + b"x" * 70000 + b"]}}"
    )
    session.data_received(state + diff)
    assert (tally.presence_states, tally.presence_diffs) == (1, 1)
    assert tally.presence_state_bytes == len(state) - 2
    assert tally.presence_diff_bytes == len(diff) - 10  # over 64 KiB: a 10-byte head
    assert len(tally.states) == 0  # the first join's state is not a rejoin's
    session.leave()
    session.rejoin()
    assert transport.take() == [
        (1, b'["1","2","loadtest:0","phx_leave",{}]'),
        (1, b'["3","3","loadtest:0","phx_join",{"presence":{"meta":{"status":"online"}}}]'),
    ]
    reply = orjson.dumps(["1", "2", "loadtest:0", "phx_reply", {"status": "ok", "response": {}}])
    close = orjson.dumps(["1", "1", "loadtest:0", "phx_close", {}])
    session.data_received(server_frame(reply) + server_frame(close) + ok_reply("3"))
    session.data_received(presence_push("3", "presence_state", b"{}"))
    assert (tally.leaves, tally.rejoins_sent, len(tally.rejoins), len(tally.states)) == (1, 1, 1, 1)
    assert tally.states[0] >= tally.rejoins[0] > 0
    assert tally.errors == {}
    assert len(tally.joins) == 1 and settled == ["settled"]


def test_a_closed_loop_publisher_keeps_its_window_and_stops_at_its_quota() -> None:
    session, tally, transport, _ = open_session(ConnSpec(0, (0,), 1, 3, 0.0), window=2)
    transport.take()
    session.data_received(ok_reply("1"))
    session.start_publishing(time.monotonic_ns(), 0)
    sent = transport.take()
    assert len(sent) == 2
    frames = [orjson.loads(payload) for _, payload in sent]
    assert [f[:4] for f in frames] == [
        ["1", "2", "loadtest:0", "publish"],
        ["1", "3", "loadtest:0", "publish"],
    ]
    assert [f[4][1]["m"].split(":")[:2] for f in frames] == [["1", "1"], ["1", "2"]]
    assert len(sent[0][1]) >= 60  # padded towards --payload-bytes
    session.data_received(ok_reply("2"))
    assert len(transport.take()) == 1  # the ack made room for the third and last
    error = b'{"status":"error","response":{"reason":"no topic server available"}}'
    session.data_received(server_frame(b'["1","3","loadtest:0","phx_reply",' + error + b"]"))
    session.data_received(ok_reply("4"))
    assert transport.take() == []
    assert (tally.sent, tally.acked, session.publishing_done) == (3, 2, True)
    assert tally.errors == {"publish_error: no topic server available": 1}
    assert tally.unconfirmed == [(0, 1, 2)]  # (topic, slot, seq): not acknowledged
    assert session.sent_per_topic == [3]


def test_a_reconnecting_subscriber_rejoins_from_its_last_position_and_counts_the_replay() -> None:
    spec = ConnSpec(0, (0,), -1, 0, 0.0)
    first, tally, transport, _ = open_session(spec, positions=True)
    assert transport.take() == [(1, b'["1","1","loadtest:0","phx_join",{"recover":null}]')]
    first.data_received(ok_reply("1"))
    assert not first.can_drop  # nothing received yet: no position to recover from
    arrivals(first, 1, 2, 3)
    assert first.position == b"e1:3" and first.can_drop
    first.drop()
    first.connection_lost(None)
    assert transport.closed
    assert (tally.open[0], tally.dropped, dict(tally.errors)) == (1, 0, {})  # still subscribed
    second, _, transport, _ = open_session(spec, tally=tally, positions=True, resume=b"e1:3")
    assert transport.take() == [
        (1, b'["1","1","loadtest:0","phx_join",{"recover":{"epoch":"e1","offset":3}}]')
    ]
    second.data_received(join_reply("1", {"recovered": True, "epoch": "e1", "offset": 6}))
    arrivals(second, 4, 5, 5, 6, 7, 8)  # the replay (5 twice), then live ones
    assert (tally.reconnects, tally.recovered, tally.recoveries_failed) == (1, 4, 0)
    assert (tally.unique[0], tally.duplicates, tally.out_of_order) == (8, 1, 0)
    assert tally.opened == 1  # a reconnection is not another connection of the phase
    assert second.position == b"e1:8"
    second.drop()
    second.connection_lost(None)
    third, _, _, _ = open_session(spec, tally=tally, positions=True, resume=b"e1:8")
    third.data_received(join_reply("1", {"recovered": False, "epoch": "e2", "offset": 0}))
    arrivals(third, 1, epoch="e2")  # a new epoch: counted, but not as recovered
    assert (tally.reconnects, tally.recovered, tally.recoveries_failed) == (2, 4, 1)
    assert tally.duplicates == 2


def test_deliveries_without_positions_leave_a_subscriber_nothing_to_recover_from() -> None:
    session, tally, _, _ = open_session(ConnSpec(0, (0,), -1, 0, 0.0), positions=True)
    session.data_received(ok_reply("1"))
    session.data_received(server_frame(delivery("loadtest:0", 0, 1)))  # ref slot null
    assert (tally.unique[0], session.position, session.can_drop) == (1, None, False)


# -- against a real server ----------------------------------------------------------------


def counters(server: Server) -> dict[str, int]:
    with urllib.request.urlopen(server.http + "/cluster", timeout=5) as response:
        return dict(json.loads(response.read())["counters"])


def loadtest(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.tools.loadtest", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fanout_run_matches_the_servers_own_count(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn({"DPS_PUBLISH_RATE": "1000000", "DPS_PUBLISH_BURST": "1000000"})
    before = counters(server)
    out = tmp_path / "report.json"
    done = loadtest(
        "--url", server.ws(), "--subscribers", "20", "--topics", "2", "--publishers", "2",
        "--messages", "200", "--procs", "2", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    after = counters(server)
    report = json.loads(out.read_text())
    # Each topic has 10 subscribers and the one publisher that joined it to publish.
    assert report["expected"] == 200 * (20 // 2 + 1)
    assert report["delivered"] == after["socket_deliveries"] - before["socket_deliveries"]
    assert report["delivered"] == report["expected"]
    assert (report["lost"], report["duplicates"], report["out_of_order"]) == (0, 0, 0)
    assert report["messages"] == report["acked"] == 200
    assert after["publishes"] - before["publishes"] == 200
    assert report["deliver_frames_per_publish"] == 1.0
    assert report["connections"]["opened"] == 22
    assert report["latency_ms"]["samples"] == report["delivered"]
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert report["client_cpu_s"] > 0 and len(report["client_cpu"]["workers_user_s"]) == 2
    assert report["errors"] == {}
    assert "fanout (PASS)" in done.stdout


def test_chat_at_a_rate_delivers_everything(spawn: Callable[..., Server], tmp_path: Path) -> None:
    """Also: an echo window at a rate, and the server's CPU time read by its PID."""
    server = spawn()
    out = tmp_path / "report.json"
    done = loadtest(
        "--scenario", "chat", "--url", server.ws(), "--subscribers", "30", "--topics", "3",
        "--rate", "200", "--duration", "1", "--window-until", "echo",
        "--server-pid", str(server.proc.pid), "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert 150 <= report["messages"] <= 250
    assert report["expected"] == report["messages"] * 10 == report["delivered"]
    assert report["server_cpu_s"] > 0
    per_delivery = report["server_cpu_us_per_delivery"]
    assert per_delivery == round(report["server_cpu_s"] * 1e6 / report["delivered"], 3)
    assert "server CPU s" in done.stdout


def test_connect_joins_from_source_addresses_and_reports_the_servers_memory(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn()
    before = counters(server)
    out = tmp_path / "report.json"
    done = loadtest(
        "--scenario", "connect", "--url", server.ws(), "--connections", "60", "--topics", "3",
        "--source-addresses", "127.0.0.2,127.0.0.3", "--duration", "0.5", "--procs", "2",
        "--server-pid", str(server.proc.pid), "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["connections"]["opened"] == report["subscriptions"] == 60
    assert counters(server)["sockets_opened"] - before["sockets_opened"] == 60
    memory = report["server_memory"]
    assert 0 < memory["rss_before_mb"] < memory["rss_held_mb"]
    assert memory["kb_per_connection"] > 0
    assert "KB per connection" in done.stdout


def test_churn_against_a_server_with_presence(spawn: Callable[..., Server], tmp_path: Path) -> None:
    channels = tmp_path / "channels.toml"
    channels.write_text('[[channel]]\ntopic = "loadtest:*"\npresence = true\n')
    server = spawn({"DPS_CHANNELS": str(channels)})
    out = tmp_path / "report.json"
    done = loadtest(
        "--scenario", "churn", "--url", server.ws(), "--subscribers", "30", "--rate", "20",
        "--duration", "1.5", "--procs", "2", "--server-pid", str(server.proc.pid),
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    presence = report["presence"]
    assert 25 <= presence["leaves"] <= 35 and 5 <= presence["rejoins_sent"] < presence["leaves"]
    assert presence["presence_states"] == presence["rejoins_sent"]  # while churning
    assert presence["presence_diffs"] > 0 and presence["presence_diff_bytes"] > 0
    assert report["rejoin_latency_ms"]["samples"] == presence["rejoins_sent"]
    assert report["presence_state_ms"]["samples"] == presence["rejoins_sent"]
    [node] = report["nodes"].values()  # measured before the clients closed
    assert node["presence_changes"] == presence["leaves"] + presence["rejoins_sent"]
    assert report["errors"] == {} and report["server_cpu_s"] > 0
    assert "presence_state ms" in done.stdout


def test_connect_failures_exit_1_unless_max_loss_allows_them(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn()
    nobody = f"ws://127.0.0.1:{free_port()}"
    out = tmp_path / "report.json"
    argv = ["--scenario", "connect", "--url", server.ws(), "--url", nobody, "--subscribers", "40"]
    argv += ["--duration", "0.5", "--procs", "2", "--json", str(out)]
    done = loadtest(*argv)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["connections"] | {"per_s": 0} == {
        "planned": 40,
        "opened": 20,
        "failed": 20,
        "dropped": 0,
        "per_s": 0,
    }
    assert report["errors"] == {"connect_refused": 20}
    assert (report["failures"], report["passed"]) == (20, False)
    assert loadtest(*argv, "--max-loss", "20").returncode == 0


def test_a_server_killed_mid_run_means_drops_and_exit_1(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn()
    out = tmp_path / "report.json"
    # A run longer than the wait below, so that the kill comes mid-run however slowly a
    # loaded machine starts it: once every connection is lost, the run ends at once.
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.tools.loadtest", "--url", server.ws(), "--subscribers", "10",
         "--rate", "50", "--duration", "30", "--drain", "1", "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while counters(server)["publishes"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, output
    report = json.loads(out.read_text())
    assert report["connections"]["dropped"] == 11
    assert report["errors"]["connection_lost"] == 11
    assert report["messages"] >= 20
    assert report["passed"] is False


def test_ctrl_c_prints_the_partial_report(spawn: Callable[..., Server], tmp_path: Path) -> None:
    server = spawn()
    out = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.tools.loadtest", "--url", server.ws(), "--subscribers", "10",
         "--rate", "50", "--duration", "30", "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while counters(server)["publishes"] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert b"interrupted: partial report" in output
    report = json.loads(out.read_text())
    assert report["interrupted"] is True
    assert report["messages"] >= 10
    assert report["delivered"] >= report["messages"]


@pytest.mark.parametrize("path", sorted((ROOT / "bench" / "scenarios").glob("*.toml")))
def test_bench_scenario_files_are_valid(path: Path) -> None:
    if "kill-owner-after" in path.read_text():  # for a cluster the load test starts only
        assert from_args(_parse("--scenario-file", str(path), "--local-cluster")).phases
        return
    phases = from_args(_parse("--scenario-file", str(path))).phases
    assert phases and all(p.targets for p in phases)
    retargeted = from_args(_parse("--scenario-file", str(path), "--url", "ws://127.0.0.1:9"))
    assert all(p.nodes == ("http://127.0.0.1:9/cluster",) for p in retargeted.phases)
