"""The `dps` command: serve (the default), publish a message through a running server, or
print a topic's presence."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from importlib.metadata import version
from urllib.parse import urlencode

from app import settings as config
from app.tools import loadtest, local_cluster

DEFAULT_URL = "http://127.0.0.1:4000"
WORKERS_HELP = (
    "serve with N gateway processes sharing DPS_PORT, and topic servers, under one "
    "supervisor; auto: one per core (overrides DPS_WORKERS)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dps",
        description="DPS, a Phoenix-compatible WebSocket pubsub server. "
        "With no command it serves the role chosen by DPS_APP; `dps serve --help` lists "
        "every setting.",
    )
    parser.add_argument("--version", action="version", version=f"dps {version('dps')}")
    parser.add_argument("--workers", help=WORKERS_HELP)
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser(
        "serve",
        help="serve the role chosen by DPS_APP (the default)",
        description="Serve the role chosen by DPS_APP, configured by the environment alone "
        "(and --workers).",
        epilog=config.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: without it, the subcommand's default would hide a `dps --workers N serve`.
    serve.add_argument("--workers", default=argparse.SUPPRESS, help=WORKERS_HELP)
    publish = commands.add_parser("publish", help="broadcast a message through POST /api/broadcast")
    publish.add_argument("topic")
    publish.add_argument("event")
    publish.add_argument("payload", help="a JSON object")
    presence = commands.add_parser(
        "presence", help="print a topic's presence, from GET /api/presence"
    )
    presence.add_argument("topic")
    for command in (publish, presence):
        command.add_argument(
            "--url", default=DEFAULT_URL, help=f"a gateway (default {DEFAULT_URL})"
        )
        command.add_argument(
            "--api-key", default=os.environ.get("DPS_API_KEY"), help="default: $DPS_API_KEY"
        )
    local_cluster.add_parser(commands)
    loadtest.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "publish":
        return _publish(args)
    if args.command == "presence":
        return _call(args, "/api/presence?" + urlencode({"topic": args.topic}))
    if args.command == "cluster":
        return local_cluster.run(args)
    if args.command == "loadtest":
        return loadtest.run(args)
    return _serve(args.workers)


def _serve(workers: str | None) -> int:
    for name in config.unknown_variables(os.environ):
        print(f"warning: {name} is not a DPS setting; ignored", file=sys.stderr)
    try:
        settings = config.load(workers)
    except config.SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    unused = "by a worker set" if settings.workers else "with DPS_APP=all (no cluster)"
    for name in settings.ignored():
        print(f"warning: {name} is ignored {unused}", file=sys.stderr)
    from app.roles import serve  # the server's imports are not needed by other commands

    return serve(settings)


def _publish(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    body = json.dumps({"topic": args.topic, "event": args.event, "payload": payload}).encode()
    return _call(args, "/api/broadcast", body)


def _call(args: argparse.Namespace, path: str, body: bytes | None = None) -> int:
    """Call the gateway's API (a POST of `body`, or a GET) and print its answer."""
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        data=body,
        headers={"Content-Type": "application/json"} if body is not None else {},
        method="GET" if body is None else "POST",
    )
    if args.api_key:
        request.add_header("Authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
