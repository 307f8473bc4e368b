"""Node links over TLS: certificates from the cluster's CA, made by trustme for the test."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
import websockets

from tests.cluster.conftest import Node
from tests.support import Server, client_tls, connect, get_json, server_context

pytestmark = pytest.mark.anyio


def issue(ca: trustme.CA, folder: Path, name: str) -> dict[str, str]:
    """The TLS settings of a node whose certificate `ca` issued for 127.0.0.1."""
    folder.mkdir()
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return {
        "DPS_LINK_TLS_CERT": str(folder / "cert.pem"),
        "DPS_LINK_TLS_KEY": str(folder / "key.pem"),
        "DPS_LINK_TLS_CA": str(folder / "ca.pem"),
    }


def ready(gateway: Server) -> int:
    try:
        with urllib.request.urlopen(gateway.http + "/readyz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_cluster_linked_over_tls(node: Node, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = node("ts", "ts-a", **issue(ca, tmp_path / "ts-a", "ts-a"))
    # The topic server's operations endpoints answer over TLS without a client certificate.
    assert get_json(server.http + "/healthz", server_context(server)) == {"status": "ok"}
    # gw-0 also serves its clients over TLS, with a certificate from another CA (a public
    # one, in production): the two kinds of TLS do not mix.
    public = client_tls(trustme.CA(), tmp_path / "public")
    gateways = [
        node("ws", f"gw-{i}", **issue(ca, tmp_path / f"gw-{i}", f"gw-{i}"), **extra)
        for i, extra in enumerate([public, {}])
    ]
    alice_tls = server_context(gateways[0])
    async with (
        connect(gateways[0].ws(), ssl=alice_tls) as alice,
        connect(gateways[1].ws()) as bob,
    ):
        await alice.join("room:tls")
        await bob.join("room:tls")
        await alice.publish("room:tls", "said", {"over": "tls"})
        assert ["1", None, "room:tls", "said", {"over": "tls"}] in [await bob.recv()]
    view = get_json(server.http + "/cluster", server_context(server))
    assert sorted(link["peer"] for link in view["links"]) == ["gw-0", "gw-1"]


async def test_a_foreign_certificate_or_none_is_refused(node: Node, tmp_path: Path) -> None:
    server = node("ts", "ts-a", **issue(trustme.CA(), tmp_path / "ts-a", "ts-a"))
    foreign = issue(trustme.CA(), tmp_path / "gw-x", "gw-x")  # another cluster's CA
    intruder = node("ws", "gw-x", ready="/healthz", **foreign)
    plain = node("ws", "gw-plain", ready="/healthz")  # no certificate at all
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        assert ready(intruder) == 503 and ready(plain) == 503
    assert "certificate verify failed" in intruder.output()
    assert get_json(server.http + "/cluster", server_context(server))["links"] == []
    # A TLS client without a certificate reaches the port, but not the link endpoint.
    url = f"wss://127.0.0.1:{server.port}/_dps/link"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, ssl=server_context(server), open_timeout=5):
            pass
    assert refused.value.response.status_code == 403
    assert "refused link from 127.0.0.1: no client certificate" in server.output()


async def test_tls_settings_come_in_threes(node: Node, tmp_path: Path) -> None:
    files = issue(trustme.CA(), tmp_path / "ts-a", "ts-a")
    del files["DPS_LINK_TLS_KEY"]
    with pytest.raises(RuntimeError, match="exited with 2") as err:
        node("ts", "ts-a", **files)
    assert "DPS_LINK_TLS_KEY: needed too" in str(err.value)
