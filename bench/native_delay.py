"""How late does a Celery countdown arrive through RabbitMQ's native delayed delivery (quorum queues)?

Publishes step messages with a few countdowns to a fresh quorum queue bound to Celery's celery_delayed_* exchanges
(declared as a worker does at its start), consumes them, prints each countdown and when it arrived, and deletes the
queue. Used to decide whether retries should be published at once with a countdown (README, Brokers).

    .venv/bin/python bench/native_delay.py [--broker amqp://guest:guest@127.0.0.1:5672//]
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kombu import Connection  # noqa: E402
from kombu.transport.native_delayed_delivery import (  # noqa: E402
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from infra.broker import make_celery  # noqa: E402
from infra.config import Settings  # noqa: E402

COUNTDOWNS = (0.5, 1, 1.9, 2, 5)
DEFAULT = "amqp://guest:guest@127.0.0.1:5672//"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", default=DEFAULT)
    url = p.parse_args().broker
    queue_name = f"bench-delay-{uuid.uuid4().hex[:8]}"
    app = make_celery(Settings.from_env({"BROKER_URL": url, "SAGA_QUEUE": queue_name}))
    queue = app.amqp.queues[queue_name]
    sent: dict[str, tuple[float, float]] = {}
    arrived: dict[str, float] = {}
    try:
        with Connection(url) as conn:
            queue(conn.default_channel).declare()
            declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
            bind_queue_to_native_delayed_delivery_exchange(conn, queue)
        with app.producer_or_acquire() as producer:
            for countdown in COUNTDOWNS:
                started = time.time()
                try:
                    result = app.send_task("saga.pay", args=[1], queue=queue_name, countdown=countdown,
                                           producer=producer)
                except ValueError as exc:
                    print(f"countdown {countdown:>4}s: refused by Celery: {exc}")
                    continue
                sent[result.id] = (countdown, started)
        with Connection(url) as conn:
            def received(_body: object, message: object) -> None:
                arrived[message.headers["id"]] = time.time()  # type: ignore[attr-defined]
                message.ack()  # type: ignore[attr-defined]

            with conn.Consumer(queue, callbacks=[received], accept=["json"]):
                deadline = time.time() + max(COUNTDOWNS) + 5
                while len(arrived) < len(sent) and time.time() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
    finally:
        with Connection(url) as conn:
            conn.default_channel.queue_delete(queue_name)
            conn.default_channel.exchange_delete(queue_name)
        app.close()
    for task_id, (countdown, started) in sent.items():
        late = f"arrived after {arrived[task_id] - started:.2f}s" if task_id in arrived else "never arrived"
        print(f"countdown {countdown:>4}s: {late}")
    print("command: .venv/bin/python bench/native_delay.py" + (f" --broker {url}" if url != DEFAULT else ""))


if __name__ == "__main__":
    main()
