"""Circuit breakers shared through Redis (fakeredis here; the integration tests use a real Redis)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.breakers import BreakerPolicy, Breakers, ProviderBlocked
from infra.providers import ProviderError, ProviderRefused
from infra.redis_client import redis_from_url


class CountingRedis(fakeredis.FakeRedis):
    """A fake Redis that counts the commands it is sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def breakers(server: fakeredis.FakeServer, ttl_s: float = 0.25, fail_max: int = 3) -> Breakers:
    """One process's breakers; two of them on one server are two processes."""
    return Breakers(CountingRedis(server=server), {"payment": BreakerPolicy(fail_max=fail_max, reset_s=30)},
                    namespace="test", state_ttl_s=ttl_s)


def ok() -> str:
    return "ok"


def fail() -> str:
    raise ProviderError("payment answered 500", uncertain=True)


def refuse() -> str:
    raise ProviderRefused("payment answered 400")


def fail_times(b: Breakers, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ProviderError):
            b.call("payment", fail)


def test_consecutive_failures_open_the_breaker_and_calls_are_refused_with_a_retry_time(
        server: fakeredis.FakeServer) -> None:
    b = breakers(server)
    fail_times(b, 2)
    with pytest.raises(Exception, match="answered 500|circuit"):
        b.call("payment", fail)  # the third failure opens it
    with pytest.raises(ProviderBlocked) as blocked:
        b.call("payment", ok)
    assert 29 <= blocked.value.retry_after_s <= 30
    assert b.state("payment").name == "open"


def test_a_success_between_failures_resets_the_count(server: fakeredis.FakeServer) -> None:
    b = breakers(server)
    fail_times(b, 2)
    assert b.call("payment", ok) == "ok"
    fail_times(b, 2)
    assert b.call("payment", ok) == "ok"
    assert b.state("payment").name == "closed"


def test_business_refusals_never_count(server: fakeredis.FakeServer) -> None:
    b = breakers(server)
    for _ in range(10):
        with pytest.raises(ProviderRefused):
            b.call("payment", refuse)
    assert b.state("payment").name == "closed"


def test_failures_in_two_processes_add_up(server: fakeredis.FakeServer) -> None:
    one, two = breakers(server), breakers(server)
    fail_times(one, 1)
    fail_times(two, 1)
    with pytest.raises(Exception, match="answered 500|circuit"):
        one.call("payment", fail)
    with pytest.raises(ProviderBlocked):
        one.call("payment", ok)


def test_another_process_sees_the_breaker_open_within_the_state_ttl(server: fakeredis.FakeServer) -> None:
    opener, other = breakers(server, ttl_s=0.1), breakers(server, ttl_s=0.1)
    assert other.call("payment", ok) == "ok"  # `other` now holds "closed" for up to 0.1 s
    fail_times(opener, 2)
    with pytest.raises(Exception, match="answered 500|circuit"):
        opener.call("payment", fail)
    time.sleep(0.12)
    with pytest.raises(ProviderBlocked):
        other.call("payment", ok)


def test_a_closed_breaker_costs_no_redis_round_trip_per_call(server: fakeredis.FakeServer) -> None:
    b = breakers(server, ttl_s=60)
    b.call("payment", ok)  # creates the keys and reads the state once
    client = b.client
    assert isinstance(client, CountingRedis)
    client.commands.clear()
    for _ in range(50):
        assert b.call("payment", ok) == "ok"
    assert client.commands == []


def test_a_failure_is_counted_in_redis_at_once(server: fakeredis.FakeServer) -> None:
    b = breakers(server, ttl_s=60)
    b.call("payment", ok)
    fail_times(b, 1)
    assert int(redis.Redis(connection_pool=b.client.connection_pool).get("test:payment:pybreaker:fail_counter")
               or 0) == 1


def test_breakers_fail_open_when_redis_is_unreachable() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                              retry=Retry(NoBackoff(), 0))
    b = Breakers(unreachable, {"payment": BreakerPolicy(fail_max=1, reset_s=30)}, namespace="test")
    assert b.call("payment", ok) == "ok"
    assert b.state("payment").name == "closed"


def test_after_a_redis_error_a_breaker_fails_open_without_asking_redis_again_within_the_ttl(
        server: fakeredis.FakeServer) -> None:
    b = breakers(server, ttl_s=0.3)
    b.call("payment", ok)
    client = b.client
    assert isinstance(client, CountingRedis)
    server.connected = False  # Redis goes away
    time.sleep(0.3)
    client.commands.clear()
    for _ in range(5):
        assert b.state("payment").name == "closed"
        assert b.call("payment", ok) == "ok"
    assert client.commands == ["MGET"]  # failed once, then closed for the ttl: nothing more to wait on
    time.sleep(0.3)
    assert b.state("payment").name == "closed"
    assert client.commands == ["MGET", "MGET"]


def test_a_redis_client_waits_once_for_a_server_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers, like a frozen Redis
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = redis_from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.monotonic() - started < 0.4  # redis-py's default would retry three times with backoff


def test_calls_to_one_provider_run_side_by_side_through_its_breaker(server: fakeredis.FakeServer) -> None:
    """pybreaker's own call holds the breaker's lock for the whole call; ours only around the bookkeeping."""
    b = breakers(server)
    together = threading.Barrier(4, timeout=5)  # broken (an error) unless four calls are in flight at once

    def meet() -> str:
        together.wait()
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: b.call("payment", meet), range(4)))
    assert answers == ["ok"] * 4


def test_failures_of_concurrent_calls_are_all_counted_and_open_the_breaker(server: fakeredis.FakeServer) -> None:
    b = breakers(server, fail_max=3)
    together = threading.Barrier(3, timeout=5)

    def fail_together() -> str:
        together.wait()
        raise ProviderError("payment answered 500", uncertain=True)

    with ThreadPoolExecutor(3) as pool:
        errors = [f.exception() for f in [pool.submit(b.call, "payment", fail_together) for _ in range(3)]]
    assert all(isinstance(e, ProviderError) for e in errors)  # each call's own error, never swallowed
    with pytest.raises(ProviderBlocked):
        b.call("payment", ok)


def test_an_open_breaker_lets_a_trial_call_through_after_its_reset_time(server: fakeredis.FakeServer) -> None:
    b = breakers(server, fail_max=1)  # reset after 30 s
    fail_times(b, 1)
    with pytest.raises(ProviderBlocked):
        b.call("payment", ok)
    storage = b._breakers["payment"][1]
    opened = datetime.now(UTC) - timedelta(seconds=31)  # as if it opened half a minute ago (pybreaker's setter
    storage._redis.set(storage._namespace("opened_at"), int(opened.timestamp()))  # only moves forward)
    assert b.call("payment", ok) == "ok"  # the trial call goes through and closes the breaker
    assert b.state("payment").name == "closed"


def test_the_failure_that_opens_the_breaker_is_raised_as_itself_so_a_lost_answer_stays_uncertain(
        server: fakeredis.FakeServer) -> None:
    """Reported as "breaker open", a call that may have charged would wait with its attempt given back and no
    doubt recorded; raised as itself, the step records the doubt and asks again with the same key."""
    b = breakers(server, fail_max=1)
    with pytest.raises(ProviderError) as raised:
        b.call("payment", fail)
    assert raised.value.uncertain
    assert b.state("payment").name == "open"
