"""JSON Web Tokens: who a socket is (connect tokens) and what it may join (join tokens).

PyJWT checks the signature, the algorithm and the registered claims `aud` and `iss`; the
times (`exp`, `nbf`) are checked here against a `now` the caller gives, so that every
rule is tested without a clock. Only the algorithms of the configured key's family are
accepted, never `none`:

    DPS_JWT_SECRET (HMAC)        HS256; HS384 from 48 bytes, HS512 from 64 (RFC 7518 3.2)
    DPS_JWT_PUBLIC_KEY, RSA      RS256, RS384, RS512, PS256, PS384, PS512
    DPS_JWT_PUBLIC_KEY, EC       ES256, ES384 or ES512, by the key's curve
    DPS_JWT_PUBLIC_KEY, Ed25519  EdDSA

A refused token raises `TokenError` with a reason fit for a log line: it never contains
the token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.settings import Settings, SettingsError

_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


class TokenError(Exception):
    """A token that is refused; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hmac_algorithms(secret: bytes) -> tuple[str, ...]:
    sizes = (("HS256", 32), ("HS384", 48), ("HS512", 64))
    return tuple(name for name, size in sizes if len(secret) >= size)


def _public_key(path: Path) -> tuple[Any, tuple[str, ...]]:
    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        problem = f"DPS_JWT_PUBLIC_KEY: cannot read a PEM public key from {path}: {exc}"
        raise SettingsError(problem) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, _RSA
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        return key, (_CURVES[key.curve.name],)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ("EdDSA",)
    raise SettingsError(
        f"DPS_JWT_PUBLIC_KEY: {path} holds an unsupported key (accepts RSA, EC P-256/384/521, "
        "Ed25519)"
    )


class Verifier:
    __slots__ = ("algorithms", "audience", "issuer", "key")

    def __init__(
        self, key: Any, algorithms: tuple[str, ...], audience: str | None, issuer: str | None
    ) -> None:
        self.key = key
        self.algorithms = algorithms
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def of(cls, settings: Settings) -> Verifier | None:
        """The verifier the settings configure, or None when no key is set.
        Raises `SettingsError` for a key that cannot be used."""
        if settings.jwt_secret is not None and settings.jwt_public_key is not None:
            raise SettingsError("DPS_JWT_SECRET and DPS_JWT_PUBLIC_KEY: set one, not both")
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
            key: Any = secret
            algorithms = _hmac_algorithms(secret)
        elif settings.jwt_public_key is not None:
            key, algorithms = _public_key(settings.jwt_public_key)
        else:
            return None
        return cls(key, algorithms, settings.jwt_audience, settings.jwt_issuer)

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a valid token; `TokenError` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenError(f"algorithm {algorithm!r} not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self.audience is not None,
                    "require": ["aud"] if self.audience is not None else [],
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("wrong issuer" if exc.claim == "iss" else "wrong audience") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        exp, nbf = claims.get("exp"), claims.get("nbf")
        for name, value in (("exp", exp), ("nbf", nbf)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TokenError(f"{name} is not a number")
        if exp is not None and now >= exp:
            raise TokenError("expired")
        if nbf is not None and now < nbf:
            raise TokenError("not yet valid")
        return claims
