"""Authentication: API key stores (one conformance suite over every backend), the key and JWT
authenticators, the turn limiter (GCRA and turns in flight, in-process and in Redis), and the
settings that refuse an unauthenticated shared store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agenthost.auth.authenticators import JWTAuthenticator, KeyAuthenticator
from agenthost.auth.keys import KeyStore, hash_key, new_key
from agenthost.auth.keystores import create_key_store
from agenthost.auth.principal import (
    Principal,
    TenantLimits,
    public_session_id,
    scoped_session_id,
)
from agenthost.core.errors import BadRequest, ConcurrencyLimited, Unauthorized
from agenthost.core.settings import Settings
from agenthost.observability.metrics import Metrics
from agenthost.ratelimit import TurnLimiter, create_limiter
from agenthost.ratelimit.gate import TurnGate
from agenthost.ratelimit.memory import gcra

# -- key stores -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "postgres"])
async def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("redis_cluster_url")
    store = create_key_store(url)
    await store.open()
    yield store
    await store.close()


async def test_a_key_is_found_by_its_hash_listed_by_tenant_and_revoked(key_store: KeyStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    key, record = new_key(tenant, TenantLimits(60, 2, 3), "ci")
    _, other = new_key(tenant + "-other", TenantLimits())
    await key_store.add(record)
    await key_store.add(other)
    assert record.key_hash == hash_key(key) and key not in repr(record)
    found = await key_store.by_hash(hash_key(key))
    assert found == record and found.limits == TenantLimits(60, 2, 3)
    assert [r.key_id for r in await key_store.list(tenant)] == [record.key_id]
    assert await key_store.by_hash(hash_key(key + "x")) is None
    assert await key_store.revoke(record.key_id)
    revoked = await key_store.by_hash(hash_key(key))
    assert revoked is not None and not revoked.active
    assert not await key_store.revoke(record.key_id), "a revoked key is not revoked twice"
    assert not await key_store.revoke("no-such-key")


def test_a_tenant_name_is_checked() -> None:
    for bad in ("no/slash", "acme\n", "", "x" * 65):
        with pytest.raises(BadRequest):
            new_key(bad, TenantLimits())
    assert public_session_id(scoped_session_id("acme", "s1")) == "s1"
    assert scoped_session_id("", "s1") == "s1"


# -- authenticators ---------------------------------------------------------------------------


async def test_a_key_authenticates_until_revoked_and_the_cache_expires() -> None:
    keys = create_key_store("memory://")
    key, record = new_key("acme", TenantLimits(10))
    await keys.add(record)
    auth = KeyAuthenticator(keys, cache_ttl=0.2)
    principal = await auth.authenticate(f"Bearer {key}")
    assert (principal.tenant, principal.key_id, principal.limits) == ("acme", record.key_id,
                                                                      TenantLimits(10))  # fmt: skip
    for bad in (None, "", key, "Basic abc", f"Bearer {key}x", "Bearer "):
        with pytest.raises(Unauthorized):
            await auth.authenticate(bad)
    await keys.revoke(record.key_id)
    await auth.authenticate(f"Bearer {key}")  # cached: still good within the TTL
    deadline = time.monotonic() + 5
    while True:
        try:
            await auth.authenticate(f"Bearer {key}")
        except Unauthorized:
            break
        assert time.monotonic() < deadline, "a revoked key kept working past the cache TTL"
        await asyncio.sleep(0.05)


def _jwt_auth(**overrides: object) -> JWTAuthenticator:
    options: dict[str, object] = {
        "secret": "s3cret-for-tests-only-32-bytes-long!",
        "public_key": None,
        "tenant_claim": "tenant",
        "audience": None,
        "issuer": None,
        "limits": TenantLimits(5),
    }
    options.update(overrides)
    return JWTAuthenticator(**options)  # type: ignore[arg-type]


async def test_hs256_tokens_name_the_tenant_and_bad_ones_are_refused() -> None:
    secret = "s3cret-for-tests-only-32-bytes-long!"
    auth = _jwt_auth(audience="agenthost")
    exp = int(time.time()) + 60
    good = jwt.encode({"tenant": "acme", "exp": exp, "aud": "agenthost"}, secret)
    principal = await auth.authenticate(f"Bearer {good}")
    assert principal.tenant == "acme" and principal.limits == TenantLimits(5)
    refused = [
        jwt.encode(
            {"tenant": "acme", "exp": exp, "aud": "agenthost"},
            "another secret, wrong, and long enough for HS256!",
        ),
        jwt.encode({"tenant": "acme", "exp": int(time.time()) - 10, "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "aud": "agenthost"}, secret),  # no exp
        jwt.encode({"tenant": "acme", "exp": exp, "aud": "someone-else"}, secret),
        jwt.encode({"sub": "acme", "exp": exp, "aud": "agenthost"}, secret),  # no tenant
        jwt.encode({"tenant": "a/b", "exp": exp, "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "tb\n", "exp": exp, "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "exp": str(exp), "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "exp": True, "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "exp": exp, "nbf": "0", "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "exp": exp, "iat": "0", "aud": "agenthost"}, secret),
        jwt.encode({"tenant": "acme", "exp": exp, "aud": "agenthost"}, secret * 2, "HS512"),
        "not-a-jwt",
    ]
    for token in refused:
        with pytest.raises(Unauthorized):
            await auth.authenticate(f"Bearer {token}")


async def test_rs256_tokens_are_checked_against_the_public_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = _jwt_auth(secret=None, public_key=public_pem, tenant_claim="org")
    token = jwt.encode({"org": "globex", "exp": int(time.time()) + 60}, private, "RS256")
    assert (await auth.authenticate(f"Bearer {token}")).tenant == "globex"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"org": "globex", "exp": int(time.time()) + 60}, other, "RS256")
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {forged}")
    hs = jwt.encode({"org": "globex", "exp": int(time.time()) + 60}, public_pem[:64], "HS256")
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {hs}")


def test_settings_refuse_no_auth_on_a_shared_store_and_jwt_without_a_key() -> None:
    with pytest.raises(ValueError, match="auth none is only for the embedded default"):
        Settings(store="redis://127.0.0.1:1/0")
    assert Settings(store="redis://127.0.0.1:1/0", allow_no_auth=True).auth == "none"
    assert Settings(store="redis://127.0.0.1:1/0", auth="keys").auth == "keys"
    with pytest.raises(ValueError, match="jwt_secret"):
        Settings(auth="jwt")
    with pytest.raises(ValueError, match="auth must be"):
        Settings(auth="basic")


def test_settings_for_a_postgres_store_need_auth_and_a_limiter_that_counts_fleet_wide() -> None:
    pg = "postgresql://u@127.0.0.1:1/db"
    with pytest.raises(ValueError, match="auth none is only for the embedded default"):
        Settings(store=pg)
    with pytest.raises(ValueError, match="need Redis to count them fleet-wide"):
        Settings(store=pg, auth="keys")
    with pytest.raises(ValueError, match="need Redis to count them fleet-wide"):
        Settings(store=pg, allow_no_auth=True, rate_limit_turns_per_minute=60)
    ok = Settings(store=pg, auth="keys", rate_limiter="redis://127.0.0.1:1/0")
    assert ok.rate_limiter == "redis://127.0.0.1:1/0"
    with pytest.raises(ValueError, match="retention applies to a postgresql"):
        Settings(retention=60)
    assert Settings(store=pg, allow_no_auth=True, retention=60).retention == 60


# -- the turn limiter -------------------------------------------------------------------------


def test_gcra_spaces_turns_by_the_interval_and_lets_a_burst_through() -> None:
    limits = TenantLimits(turns_per_minute=60, burst=3)
    tat, admitted = 0.0, []
    for step in range(10):  # ten turns at t = 0
        admission, tat = gcra(tat, 0.0, limits)
        admitted.append(admission.allowed)
        if step == 3:
            assert admission.retry_after_s == pytest.approx(1.0)
    assert admitted == [True, True, True] + [False] * 7
    admission, _ = gcra(tat, 1.0, limits)
    assert admission.allowed and admission.remaining == 0


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[TurnLimiter]:
    fixture = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}.get(request.param)
    url = "memory://" if fixture is None else request.getfixturevalue(fixture)
    the_limiter = create_limiter(url, hold_s=0.3)
    await the_limiter.open()
    yield the_limiter
    await the_limiter.close()


async def test_the_rate_admits_the_burst_then_refuses_with_a_retry_time(
    limiter: TurnLimiter,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    limits = TenantLimits(turns_per_minute=6, burst=2)  # one turn every 10 s
    results = [await limiter.admit(tenant, limits, f"turn-{i}") for i in range(4)]
    assert [r.allowed for r in results] == [True, True, False, False]
    assert results[0].remaining == 1 and results[1].remaining == 0
    refused = results[2]
    assert refused.reason == "rate" and 0 < refused.retry_after_s <= 10
    other = await limiter.admit(tenant + "-b", limits, "turn-0")
    assert other.allowed, "tenants are limited separately"


async def test_a_slot_is_held_per_running_turn_whatever_its_turn_id(
    limiter: TurnLimiter,
) -> None:
    """Ten sessions whose turns share one Idempotency-Key are ten running turns: with one
    slot, the gate admits one and refuses nine. The same turn sent again keeps its slot."""
    gate = TurnGate(limiter, Metrics())
    principal = Principal(f"t-{uuid.uuid4().hex[:6]}", TenantLimits(max_inflight=1))
    await gate.enter(principal, "s-0", "k")
    refused = 0
    for i in range(1, 10):
        with pytest.raises(ConcurrencyLimited):
            await gate.enter(principal, f"s-{i}", "k")
        refused += 1
    assert refused == 9
    await gate.enter(principal, "s-0", "k")  # a retry of the running turn
    gate.leave(principal, "s-0", "k")
    deadline = time.monotonic() + 5
    while True:  # freed in the background where the backend cannot free it at once
        try:
            await gate.enter(principal, "s-1", "k")
            break
        except ConcurrencyLimited:
            assert time.monotonic() < deadline, "the slot was never freed"
            await asyncio.sleep(0.01)


async def test_turns_in_flight_are_bounded_freed_on_release_and_after_the_hold(
    limiter: TurnLimiter,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    limits = TenantLimits(max_inflight=2)
    assert (await limiter.admit(tenant, limits, "a")).allowed
    assert (await limiter.admit(tenant, limits, "b")).allowed
    third = await limiter.admit(tenant, limits, "c")
    assert not third.allowed and third.reason == "inflight"
    await limiter.release(tenant, limits, "a")
    assert (await limiter.admit(tenant, limits, "c")).allowed
    # The hot path frees a slot without waiting for the reply, where the backend can.
    if not limiter.release_nowait(tenant, limits, "c"):
        await limiter.release(tenant, limits, "c")
    deadline = time.monotonic() + 5
    while not (await limiter.admit(tenant, limits, "c2")).allowed:
        assert time.monotonic() < deadline, "a slot freed without waiting stayed taken"
        await asyncio.sleep(0.01)
    # Nobody releases "b" and "c" (their process died): their slots free after hold_s.
    deadline = time.monotonic() + 5
    while not (await limiter.admit(tenant, limits, "d")).allowed:
        assert time.monotonic() < deadline, "held slots never expired"
        await asyncio.sleep(0.05)
