"""What a person sees: the live progress line, the summary table, and the JSON file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

REFRESH_PER_S = 4
RATE_LIMITED_HINT = (
    "the server limits publishes per socket (DPS_PUBLISH_RATE, DPS_PUBLISH_BURST; their "
    "defaults suit a chat): raise them on the server for a load test"
)
NO_POSITIONS_HINT = (
    "no subscriber reconnected: publishing ended before a drop was due, or no delivery "
    "carried a position to recover from because the topics keep no history (a channels.toml "
    "rule with history_size: --local-cluster's default, or "
    "DPS_CHANNELS=app/tools/loadtest/channels.toml on the servers)"
)
PLAIN_EVERY_S = 1.0  # without a terminal, --progress prints a line this often


class ProgressLine:
    """One line, redrawn a few times a second on a terminal (or printed once a second with
    --progress elsewhere): phase, step, elapsed time, sent, delivered and the rate, errors."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.live: Live | None = None
        self.started = time.monotonic()
        self.last = (self.started, 0)
        self.printed = self.started
        self.rate = 0.0

    def start(self, phase: str) -> None:
        self.started = self.printed = time.monotonic()
        self.last = (self.started, 0)
        self.rate = 0.0
        if self.enabled and self.console.is_terminal:
            self.live = Live(
                Text(f"{phase}: starting"),
                console=self.console,
                refresh_per_second=REFRESH_PER_S,
                transient=True,
            )
            self.live.start()

    def update(self, phase: str, step: str, delivered: int, errors: int, sent: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        then, before = self.last
        if now - then >= 0.5:
            self.rate = (delivered - before) / (now - then)
            self.last = (now, delivered)
        line = Text(
            f"{phase} [{step}] {now - self.started:6.1f} s  sent {sent:,}  "
            f"delivered {delivered:,} ({self.rate:,.0f}/s)  errors {errors:,}",
            style="red" if errors else "",
        )
        if self.live is not None:
            self.live.update(line)
        elif now - self.printed >= PLAIN_EVERY_S:
            self.printed = now
            self.console.print(line)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _ms(values: dict[str, float]) -> str:
    if not values.get("samples"):
        return "-"
    return "  ".join(f"{k} {values[k]:.2f}" for k in ("p50", "p90", "p99", "p999", "max"))


def summary(report: dict[str, Any]) -> Table:
    conns = report["connections"]
    verdict = "PASS" if report["passed"] else "FAIL"
    if report["interrupted"]:
        verdict = "interrupted: partial report"
    table = Table(
        title=f"{report['phase']}: {report['scenario']} ({verdict})",
        show_header=False,
        title_justify="left",
        box=box.SIMPLE,
    )
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("targets", ", ".join(report["targets"])),
        (
            "connections",
            f"{conns['opened']:,} opened of {conns['planned']:,}, {conns['failed']:,} failed, "
            f"{conns['dropped']:,} dropped; {conns['per_s']:,.0f}/s",
        ),
        ("connect latency ms", _ms(report["connect_latency_ms"])),
        ("subscriptions", f"{report['subscriptions']:,} joined"),
        ("join latency ms", _ms(report["join_latency_ms"])),
    ]
    if report["scenario"] == "churn":
        presence = report["presence"]
        rows += [
            ("subscriptions", f"{report['subscriptions']:,} joined"),
            ("join latency ms", _ms(report["join_latency_ms"])),
            ("churn", f"{presence['leaves']:,} leaves, {presence['rejoins_sent']:,} joins again"),
            ("rejoin latency ms", _ms(report["rejoin_latency_ms"])),
            ("presence_state ms", _ms(report["presence_state_ms"])),
            (
                "presence received",
                f"{presence['presence_states']:,} states ({presence['presence_state_bytes']:,} "
                f"bytes), {presence['presence_diffs']:,} diffs "
                f"({presence['presence_diff_bytes']:,} bytes)",
            ),
        ]
    elif report["scenario"] != "connect":
        rows += [
            (
                "messages",
                f"{report['messages']:,} published, {report['acked']:,} acknowledged, "
                f"{report['unacknowledged']:,} not",
            ),
            ("ack latency ms", _ms(report["ack_latency_ms"])),
            (
                "deliveries",
                f"{report['delivered']:,} of {report['expected']:,} expected: "
                f"{report['lost']:,} lost, {report['duplicates']:,} duplicated, "
                f"{report['out_of_order']:,} out of order",
            ),
            (
                "delivery rate",
                f"{report['deliveries_per_s']:,.0f}/s over {report['publish_s']:.2f} s",
            ),
            ("latency ms", _ms(report["latency_ms"])),
        ]
    if report["reconnect_every"]:
        rows.append(
            (
                "reconnects",
                f"{report['reconnects']:,} (every {report['reconnect_every']:g} s): "
                f"{report['recovered']:,} messages recovered, "
                f"{report['recoveries_failed']:,} recoveries failed",
            )
        )
    killed = report["killed"]
    if killed is not None:
        rows.append(
            (
                "killed",
                f"{killed['node']} (PID {killed['pid']}), the owner of {killed['topic']}, "
                f"{killed['after_s']:g} s into publishing",
            )
        )
    if report["server_cpu_s"] is not None:
        per = report["server_cpu_us_per_delivery"]
        rows.append(
            (
                "server CPU s",
                f"{report['server_cpu_s']:.2f}" + (f", {per} µs per delivery" if per else ""),
            )
        )
    memory = report["server_memory"]
    if memory is not None:
        rows.append(
            (
                "server memory",
                f"{memory['rss_before_mb']:,} MB before, {memory['rss_held_mb']:,} MB with the "
                f"connections: {memory['kb_per_connection']} KB per connection",
            )
        )
    if report["deliver_frames_per_publish"] is not None:
        rows.append(("deliver frames/publish", f"{report['deliver_frames_per_publish']}"))
    for node, deltas in report["nodes"].items():
        shown: tuple[str, ...] = ("publishes", "gateway_deliveries_sent", "socket_deliveries")
        if report["scenario"] == "churn":
            shown = ("presence_changes", "presence_diff_bytes", "socket_deliveries")
        rows.append((f"Δ {node}", ", ".join(f"{k} {deltas.get(k, 0):,}" for k in shown)))
    cpu = report["client_cpu"]
    rows.append(
        (
            "client CPU s",
            f"{report['client_cpu_s']:.2f}: workers user {cpu['workers_user_s']} "
            f"sys {cpu['workers_sys_s']}, parent {cpu['parent_s']}; "
            f"workers busy {cpu['workers_busy']} (CPU s/s while measuring)",
        )
    )
    errors = report["errors"]
    rows.append(("errors", ", ".join(f"{k}: {v:,}" for k, v in errors.items()) or "none"))
    if any("rate limited" in kind for kind in errors):
        rows.append(("hint", RATE_LIMITED_HINT))
    if report["reconnect_every"] and report["delivered"] and not report["reconnects"]:
        rows.append(("hint", NO_POSITIONS_HINT))
    rows.append(("failures", f"{report['failures']:,} (max-loss {report['max_loss']:,})"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
