"""The Celery application (configuration only) and the publisher that sends "run step N of saga S"."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import redis
from celery import Celery

from infra.config import Settings
from infra.logs import current
from infra.redis_client import sentinel_address

log = logging.getLogger(__name__)


REQUEST_ID = "request_id"  # the message header carrying the request id of the API call or task that sent it


def task_name(step: str) -> str:
    """The Celery task that runs `step`, named to read well in Flower."""
    return f"saga.{step}"


def args_shown(saga_id: int, step: str, order_id: int | None = None) -> str:
    """How a step message's arguments read in Flower, and what its search finds: "saga=12 order=34 step=pay"
    (a search needs 3 characters or more: "saga=12" finds a saga where "12" could not)."""
    order = f" order={order_id}" if order_id is not None else ""
    return f"saga={saga_id}{order} step={step}"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured so that the database, not the broker, holds the truth.

    - acks_late + reject_on_worker_lost: a task whose process dies is delivered again, not lost; every task
      is idempotent (the step claim is a compare-and-set), so a repeat is harmless.
      A task that raises (StepAttemptFailed: its failed attempt is recorded) is acknowledged like one that
      returns (task_acks_on_failure_or_timeout, Celery's default): reject_on_worker_lost is only for a process
      that dies, so the failure is never delivered again; the engine's retry is a new message.
    - prefetch 1: a worker holds one message per process, so a crash strands at most one.
    - the transport options are the broker's: Redis below, RabbitMQ in _rabbitmq_options.
    - visibility_timeout (Redis): an unacked message (its worker vanished) comes back after this long; it is longer than
      any step lease so a slow step is not run twice at once, and the sweeper re-sends sooner anyway.
    - no result backend: nobody waits on a Celery result; status is read from the saga table.
    - unacked restore (Redis): workers put back unacked messages older than the visibility timeout (at most
      unacked_restore_limit per pass, so a restart after a crash does not flood the queue at once).
    - bounded publish: every broker socket operation waits at most PUBLISH_TIMEOUT_S, and the Publisher sends
      each message once, without the retry policy below (kept short for Celery's own sends, such as beat's), so
      an API call never hangs on a dead or frozen broker; what could not be sent stays in the step's outbox
      columns for the sweeper.
    - connection loss: running steps finish (their late ack is lost, the message comes back and finds the step
      done: a no-op); the worker reconnects forever, and beat resumes sweeping.
    """
    url = broker_url(settings)
    rabbitmq = is_amqp(url)
    if not rabbitmq:
        _guard_restore_at_close()
        _reuse_sync_clients()
    app = Celery("bookmarket", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,  # Flower turns events on while it watches either way
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.publish_timeout_s,
        broker_pool_limit=20,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        beat_schedule=beat_schedule(settings),
    )
    app.conf.update(_rabbitmq_options(settings) if rabbitmq else _redis_options(settings))
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """What beat sends: the sweeper every SWEEP_INTERVAL_S; with RETENTION_DAYS above 0, a retention pass every
    RETENTION_INTERVAL_S (each pass at most RETENTION_MAX_BATCHES batches, one process at a time)."""
    schedule: dict[str, dict[str, object]] = {"sweep": {"task": "saga.sweep", "schedule": settings.sweep_interval_s}}
    if settings.retention_days > 0:
        schedule["retention"] = {"task": "saga.retention", "schedule": settings.retention_interval_s,
                                 "options": {"expires": settings.retention_interval_s}}
    return schedule


def _sentinel_options(settings: Settings) -> dict[str, object]:
    """A `sentinel://` REDIS_URL: the master's name (REDIS_SENTINEL_MASTER), and the URL's credentials for the
    Sentinels too, as the other Redis clients use them (infra/redis_client.py)."""
    address = sentinel_address(broker_url(settings))
    if address is None:
        return {}
    timeouts = {"socket_timeout": settings.publish_timeout_s, "socket_connect_timeout": settings.publish_timeout_s}
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": {**timeouts, **address.auth()}}


def broker_url(settings: Settings) -> str:
    """The Celery broker: BROKER_URL, or the Redis of REDIS_URL when it is empty."""
    return settings.broker_url or settings.redis_url


def is_amqp(url: str) -> bool:
    """Whether `url` is a RabbitMQ (AMQP) broker."""
    return url.partition("://")[0] in ("amqp", "amqps", "pyamqp")


def _redis_options(settings: Settings) -> dict[str, object]:
    """Redis transport: an unacked message comes back after visibility_timeout; every socket operation is bounded."""
    return {
        "broker_transport_options": {
            "visibility_timeout": max(300, int(settings.step_lease_s * 4)),
            "socket_timeout": settings.publish_timeout_s,
            "socket_connect_timeout": settings.publish_timeout_s,
            "max_retries": 1,
            "unacked_restore_limit": 100,
            **_sentinel_options(settings),
        },
    }


def _rabbitmq_options(settings: Settings) -> dict[str, object]:
    """RabbitMQ transport (README "Brokers"):

    - the step queue (and any queue Celery creates on demand) is a durable quorum queue, replicated over the
      cluster's nodes, so it survives the loss of a node; its exchange is a topic exchange, which Celery's native
      delayed delivery needs (it routes a countdown through the celery_delayed_* exchanges to the queue);
    - publisher confirms: every publish waits for the broker's ack (bounded by PUBLISH_TIMEOUT_S, the Publisher's
      confirm_timeout), so a message the broker did not take is reported as unsent and left to the sweeper;
    - every socket read and write without a timeout of its own bounded by a quarter of PUBLISH_TIMEOUT_S
      (SO_RCVTIMEO/SO_SNDTIMEO): after a confirm timed out, the pool closes the connection, and closing waits for
      the broker's close-ok twice (channel, connection), which a frozen broker never sends (seen: the API call hung
      there). So a frozen broker costs a publish at most 1.5 x PUBLISH_TIMEOUT_S. A healthy broker answers in
      milliseconds; the worker's consumer reads only when its socket is readable;
    - quorum queues have no global QoS: worker_detect_quorum_queues makes the worker use per-consumer prefetch;
    - an unacked message whose connection died (kill -9 of a worker) comes back at once: no visibility timeout.
    """
    return {
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "task_create_missing_queue_type": "quorum",
        "task_create_missing_queue_exchange_type": "topic",
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
        "broker_transport_options": {"confirm_publish": True, "read_timeout": settings.publish_timeout_s / 4,
                                     "write_timeout": settings.publish_timeout_s / 4,
                                     # a refused connect is tried once, at once (as on Redis), not again after 2 s
                                     "max_retries": 1, "interval_start": 0},
    }


def queue_depth(url: str, queue: str, timeout_s: float) -> int:
    """Messages ready in RabbitMQ's `queue` (a passive queue.declare, no management plugin), within `timeout_s`
    (connect, socket reads and writes); 0 while no worker has declared the queue yet."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    options = {"read_timeout": timeout_s, "write_timeout": timeout_s}
    with Connection(url, connect_timeout=timeout_s, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
        try:
            _, ready, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        except NotFound:
            return 0
        return int(ready)


def _guard_restore_at_close() -> None:
    """Work around two kombu races when Redis dies under a worker with late acks:

    - closing a channel restores its unacked messages through a connection that is already gone;
    - after the reconnect, the late ack of a message delivered on the dead channel goes through that channel.
    Both raise AttributeError ('NoneType' object has no attribute 'hostname' / 'client'), which Celery does not
    expect: the first left the consumer connected to nothing, the second stops the worker ("Unrecoverable
    error"). Swallowing them is safe here: an unacked message comes back after the visibility timeout and finds
    its step already claimed (a no-op), and the sweeper re-sends every step the database says is due.
    """
    from kombu.transport.redis import QoS as RedisQoS
    from kombu.transport.virtual.base import QoS

    _guard(QoS, "restore_unacked_once")
    _guard(RedisQoS, "ack")


def _reuse_sync_clients() -> None:
    """kombu's Redis channel builds a new redis-py client object for every publish and every ack (conn_or_acquire
    without a client): profiled at a twentieth of the API's CPU per order (its response-callback table is rebuilt
    each time). A client over the same connection pool is safe to share between threads, so each channel keeps
    one per pool (a new pool after a reconnect gets a new client); the consuming (asynchronous) client is kombu's
    own, untouched."""
    from kombu.transport.redis import Channel

    original = Channel._create_client
    if getattr(original, "_bookmarket_reused", False):
        return

    def create_client(self: Channel, asynchronous: bool = False) -> object:
        if asynchronous:
            return original(self, asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_bookmarket_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_bookmarket_client"] = (pool, original(self))
        return cached[1]

    create_client._bookmarket_reused = True  # type: ignore[attr-defined]
    Channel._create_client = create_client  # type: ignore[method-assign]


def _guard(cls: type, name: str) -> None:
    original = getattr(cls, name)
    if getattr(original, "_bookmarket_guarded", False):
        return

    def guarded(self: object, *args: object, **kwargs: object) -> object:
        try:
            return original(self, *args, **kwargs)
        except (AttributeError, OSError, redis.RedisError) as exc:
            log.warning("%s.%s on a channel whose connection is gone: %r", cls.__name__, name, exc)
            return None

    guarded._bookmarket_guarded = True  # type: ignore[attr-defined]
    setattr(cls, name, guarded)


class Publisher:
    """Sends step messages within `timeout_s` (PUBLISH_TIMEOUT_S); returns what it could not send instead of raising.

    Each send waits at most `timeout_s` (the transport's socket timeouts) and is tried once: Celery's publish retry
    would reconnect and wait again, doubling the bound on a hung broker (a pooled connection that Redis dropped is
    replaced by redis-py when it is taken, so a restarted Redis needs no retry). Waiting for a free producer has the
    same bound.
    """

    def __init__(self, app: Celery, queue: str, duplicate: bool = False, timeout_s: float = 2.0,
                 routes: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.queue = queue
        self.routes = dict(routes or {})  # STEP_QUEUES as step -> queue (services.runtime.step_routes); else `queue`
        self.copies = 2 if duplicate else 1  # CHAOS_DUPLICATE_DISPATCH: every message twice, for fault tests
        self.timeout_s = timeout_s

    def queue_for(self, step: str) -> str:
        """The queue `step`'s messages go to: its STEP_QUEUES route, or SAGA_QUEUE."""
        return self.routes.get(step, self.queue)

    def publish(self, dispatches: Sequence[tuple[int, str]],
                orders: Mapping[int, int] | None = None) -> list[tuple[int, str]]:
        """Send each (saga_id, step) (`orders`: saga id -> order id, as far as known); the ones that failed are
        returned."""
        if not dispatches:
            return []
        try:
            with self.app.producer_pool.acquire(block=True, timeout=self.timeout_s) as producer:
                for index, (saga_id, step) in enumerate(dispatches):
                    self._send(producer, saga_id, step, index, (orders or {}).get(saga_id))
        except _PartialPublish as partial:
            return list(dispatches[partial.index:])
        except Exception:  # noqa: BLE001 - the broker is unreachable: nothing was sent
            log.warning("broker unreachable; %d dispatch(es) left for the sweeper", len(dispatches), exc_info=True)
            return list(dispatches)
        return []

    def _send(self, producer: object, saga_id: int, step: str, index: int, order_id: int | None) -> None:
        shown = args_shown(saga_id, step, order_id)
        try:
            for _ in range(self.copies):
                self.app.send_task(task_name(step), args=[saga_id], queue=self.queue_for(step), producer=producer,
                                   retry=False, headers=self._headers(), argsrepr=shown, kwargsrepr="",
                                   confirm_timeout=self.timeout_s)  # RabbitMQ's publisher confirm; Redis ignores it
        except Exception as exc:  # noqa: BLE001
            log.warning("publish of %s for saga %s failed: %s", step, saga_id, exc)
            raise _PartialPublish(index) from None


    @staticmethod
    def _headers() -> dict[str, str]:
        """The request id of the log context travels with the message, into the worker's log lines."""
        request_id = current("request_id")
        return {REQUEST_ID: request_id} if request_id else {}


class _PartialPublish(Exception):
    def __init__(self, index: int) -> None:
        self.index = index
