"""Connect and join tokens, without sockets: signatures, algorithms, claims, time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.settings import Settings, SettingsError
from ws_gateway.access.tokens import TokenError, Verifier

SECRET = "0123456789abcdef0123456789abcdef"  # 32 characters
NOW = 1_800_000_000.0


def verifier(**settings: Any) -> Verifier:
    found = Verifier.of(Settings(**settings))
    assert found is not None
    return found


def refused(v: Verifier, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenError) as err:
        v.verify(token, now)
    return err.value.reason


def pem(tmp_path: Path, key: Any) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_no_key_no_verifier() -> None:
    assert Verifier.of(Settings()) is None


def test_hmac_tokens_and_their_times() -> None:
    v = verifier(jwt_secret=SECRET)
    assert v.algorithms == ("HS256",)
    token = jwt.encode({"sub": "alice", "exp": NOW + 60, "nbf": NOW - 60}, SECRET)
    assert v.verify(token, NOW)["sub"] == "alice"
    assert refused(v, token, NOW + 60) == "expired"
    assert refused(v, token, NOW - 61) == "not yet valid"
    assert refused(v, jwt.encode({"sub": "a", "exp": "soon"}, SECRET)) == "exp is not a number"


def test_longer_secrets_admit_longer_hashes() -> None:
    assert verifier(jwt_secret="x" * 48).algorithms == ("HS256", "HS384")
    v = verifier(jwt_secret="x" * 64)
    assert v.verify(jwt.encode({"sub": "a"}, "x" * 64, algorithm="HS512"), NOW)["sub"] == "a"


def test_forged_malformed_and_unsigned_tokens() -> None:
    v = verifier(jwt_secret=SECRET)
    forged = jwt.encode({"sub": "alice"}, "another secret, at least 32 bytes long")
    assert refused(v, forged) == "bad signature"
    assert refused(v, "not.a.token") == "malformed token"
    assert refused(v, "") == "malformed token"
    unsigned = jwt.encode({"sub": "alice"}, None, algorithm="none")
    assert refused(v, unsigned) == "algorithm 'none' not accepted"
    # A signature with one character changed, or a payload swapped under a valid signature.
    token = jwt.encode({"sub": "alice"}, SECRET)
    header, payload, signature = token.split(".")
    changed = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert refused(v, f"{header}.{payload}.{changed}") == "bad signature"
    other = jwt.encode({"sub": "mallory"}, SECRET).split(".")[1]
    assert refused(v, f"{header}.{other}.{signature}") == "bad signature"


def test_rsa_keys_refuse_hmac_tokens_made_with_the_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = pem(tmp_path, key)
    v = verifier(jwt_public_key=path)
    assert v.verify(jwt.encode({"sub": "a"}, key, algorithm="RS256"), NOW)["sub"] == "a"
    assert v.verify(jwt.encode({"sub": "a"}, key, algorithm="PS384"), NOW)["sub"] == "a"
    # The classic confusion: HS256 "signed" with the public key's PEM as the HMAC secret.
    public = path.read_bytes()
    confused = jwt.api_jws.PyJWS()
    confused._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    token = confused.encode(b'{"sub":"admin"}', public, algorithm="HS256")
    assert refused(v, token) == "algorithm 'HS256' not accepted"


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_ec_and_edwards_keys(tmp_path: Path, key: Any, algorithm: str) -> None:
    v = verifier(jwt_public_key=pem(tmp_path, key))
    assert v.algorithms == (algorithm,)
    assert v.verify(jwt.encode({"sub": "a"}, key, algorithm=algorithm), NOW)["sub"] == "a"
    assert refused(v, jwt.encode({"sub": "a"}, SECRET)) == "algorithm 'HS256' not accepted"


def test_audience_and_issuer() -> None:
    v = verifier(jwt_secret=SECRET, jwt_audience="chat", jwt_issuer="https://auth.example")
    good = {"sub": "a", "aud": "chat", "iss": "https://auth.example"}
    assert v.verify(jwt.encode(good, SECRET), NOW)["sub"] == "a"
    assert refused(v, jwt.encode({**good, "aud": "admin"}, SECRET)) == "wrong audience"
    assert refused(v, jwt.encode({"sub": "a", "iss": good["iss"]}, SECRET)) == "wrong audience"
    assert refused(v, jwt.encode({**good, "iss": "https://evil"}, SECRET)) == "wrong issuer"
    assert refused(v, jwt.encode({"sub": "a", "aud": "chat"}, SECRET)) == "wrong issuer"


def test_unusable_keys_are_one_line_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="set one, not both"):
        Verifier.of(Settings(jwt_secret=SECRET, jwt_public_key=tmp_path / "k.pem"))
    with pytest.raises(SettingsError, match="DPS_JWT_PUBLIC_KEY: cannot read"):
        Verifier.of(Settings(jwt_public_key=tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(SettingsError, match="DPS_JWT_PUBLIC_KEY: cannot read"):
        Verifier.of(Settings(jwt_public_key=tmp_path / "junk.pem"))
