"""Turning a request's `Authorization` header into a Principal, by `--auth`:

- `none`: everyone is the anonymous tenant (the embedded default only);
- `keys`: `Authorization: Bearer ahk_...`, an API key from `agenthost keys create`, looked up by
  its hash in the store's backend; answers are cached `--auth-cache-ttl` seconds, so a revoked
  key stops working within that time;
- `jwt`: `Authorization: Bearer <JWT>` signed with HS256 (`--jwt-secret`) or RS256
  (`--jwt-public-key`), `exp` required, the tenant read from the `--jwt-tenant-claim` claim.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from agenthost.auth.keys import KeyRecord, KeyStore, hash_key
from agenthost.auth.principal import Principal, TenantLimits, is_tenant
from agenthost.core.errors import Unauthorized
from agenthost.core.settings import Settings
from agenthost.observability.logs import bind_tenant

__all__ = [
    "Authenticator",
    "JWTAuthenticator",
    "KeyAuthenticator",
    "NoAuthenticator",
    "create_authenticator",
    "default_limits",
]

_MAX_CACHED = 100_000
_NUMERIC_CLAIMS = ("exp", "nbf", "iat")


@runtime_checkable
class Authenticator(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an `Authorization` header value; raise Unauthorized (401)."""
        ...


def default_limits(settings: Settings) -> TenantLimits:
    return TenantLimits(
        settings.rate_limit_turns_per_minute,
        settings.rate_limit_burst,
        settings.rate_limit_max_inflight,
    )


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("this server needs Authorization: Bearer <API key or token>")
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("use Authorization: Bearer <API key or token>")
    return credential


class NoAuthenticator:
    def __init__(self, limits: TenantLimits) -> None:
        self.principal = Principal("", limits)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def authenticate(self, authorization: str | None) -> Principal:
        return self.principal


class KeyAuthenticator:
    def __init__(self, keys: KeyStore, *, cache_ttl: float) -> None:
        self.keys = keys
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def open(self) -> None:
        await self.keys.open()

    async def close(self) -> None:
        await self.keys.close()

    async def authenticate(self, authorization: str | None) -> Principal:
        key_hash = hash_key(_bearer(authorization))
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            record = await self.keys.by_hash(key_hash)
            principal = _principal(record)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key_hash] = (principal, now + self.cache_ttl)
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
        bind_tenant(principal.tenant)
        return principal


def _principal(record: KeyRecord | None) -> Principal | None:
    if record is None or not record.active:
        return None
    return Principal(record.tenant, record.limits, record.key_id)


class JWTAuthenticator:
    def __init__(
        self,
        *,
        secret: str | None,
        public_key: str | None,
        tenant_claim: str,
        audience: str | None,
        issuer: str | None,
        limits: TenantLimits,
    ) -> None:
        if public_key:
            self.key: str = public_key
            self.algorithms = ["RS256"]
        elif secret:
            self.key = secret
            self.algorithms = ["HS256"]
        else:
            raise ValueError("--auth jwt needs --jwt-secret (HS256) or --jwt-public-key (RS256)")
        self.tenant_claim = tenant_claim
        self.audience = audience
        self.issuer = issuer
        self.limits = limits
        self._cache: dict[str, tuple[Principal, float]] = {}
        # PyJWT (and what it loads for RS256) is imported where tokens are checked.
        import jwt

        self._jwt = jwt

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            bind_tenant(cached[0].tenant)
            return cached[0]
        try:
            claims = self._jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"]},
            )
        except self._jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        for claim in _NUMERIC_CLAIMS:
            value = claims.get(claim)
            # RFC 7519 §2: a NumericDate is a JSON number; PyJWT would also take "1e10".
            if claim in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise Unauthorized(f"invalid token: the {claim!r} claim is not a number")
        tenant = claims.get(self.tenant_claim)
        if not is_tenant(tenant):
            raise Unauthorized(f"the token's {self.tenant_claim!r} claim is not a valid tenant")
        principal = Principal(tenant, self.limits)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (principal, float(claims["exp"]))
        bind_tenant(tenant)
        return principal


def _read_key(value: str | None) -> str | None:
    """A PEM given inline, or `@path` to a file holding it."""
    if value and value.startswith("@"):
        return Path(value[1:]).read_text()
    return value


def create_authenticator(settings: Settings) -> Authenticator:
    limits = default_limits(settings)
    if settings.auth == "none":
        return NoAuthenticator(limits)
    if settings.auth == "keys":
        from agenthost.auth.keystores import create_key_store

        return KeyAuthenticator(create_key_store(settings.store), cache_ttl=settings.auth_cache_ttl)
    return JWTAuthenticator(
        secret=settings.jwt_secret,
        public_key=_read_key(settings.jwt_public_key),
        tenant_claim=settings.jwt_tenant_claim,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        limits=limits,
    )
