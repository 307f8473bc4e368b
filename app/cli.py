"""The `dps` command: serve (the default), or publish a message through a running server."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from importlib.metadata import version

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
    publish.add_argument("--url", default=DEFAULT_URL, help=f"a gateway (default {DEFAULT_URL})")
    publish.add_argument(
        "--api-key", default=os.environ.get("DPS_API_KEY"), help="default: $DPS_API_KEY"
    )
    local_cluster.add_parser(commands)
    loadtest.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "publish":
        return _publish(args)
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
    request = urllib.request.Request(
        args.url.rstrip("/") + "/api/broadcast",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
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
