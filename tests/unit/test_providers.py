"""The provider HTTP client against a real local HTTP server: how each kind of answer or failure is sorted."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infra.providers import HttpProvider, PaymentClient, PaymentDeclined, ProviderError, ProviderRefused


class Recorder(BaseHTTPRequestHandler):
    """Answers POST /<status> with that status; /slow sleeps past the client's timeout; /drop closes at once;
    /drop-once closes at once the first time it sees an idempotency key and answers the next time."""

    seen: list[dict[str, Any]] = []
    dropped: set[str] = set()

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append({"path": self.path, "key": self.headers.get("Idempotency-Key"),
                              "type": self.headers.get("Content-Type"), "body": json.loads(body or b"null")})
        name = self.path.rsplit("/", 1)[-1]
        if name == "drop" or (name == "drop-once" and self.headers["Idempotency-Key"] not in Recorder.dropped):
            Recorder.dropped.add(self.headers["Idempotency-Key"])
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if name == "slow":
            time.sleep(0.6)
        status = int(name) if name.isdigit() else 201
        payload = json.dumps({"id": "ref-1", "detail": f"answer {status}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pay"
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_success_returns_the_reference_and_sends_the_key_and_json(server: str) -> None:
    Recorder.seen.clear()
    reply = HttpProvider("payment", server, 2.0).post("/201", "saga-1:pay", {"amount_cents": 4299})
    assert reply.reference == "ref-1"
    assert Recorder.seen == [{"path": "/pay/201", "key": "saga-1:pay", "type": "application/json",
                              "body": {"amount_cents": 4299}}]


def test_keep_alive_reuses_one_connection_for_many_calls(server: str) -> None:
    provider = HttpProvider("payment", server, 2.0)
    for i in range(5):
        assert provider.post("/200", f"k{i}", {}).reference == "ref-1"
    assert provider._pool is not None and provider._pool.num_connections == 1


def test_a_declined_payment_is_a_business_refusal(server: str) -> None:
    with pytest.raises(PaymentDeclined, match="answer 402"):
        PaymentClient("payment", server, 2.0).post("/402", "k", {})


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_client_error_is_a_permanent_refusal(server: str, status: int) -> None:
    with pytest.raises(ProviderRefused) as caught:
        HttpProvider("delivery", server, 2.0).post(f"/{status}", "k", {})
    assert not isinstance(caught.value, PaymentDeclined)
    assert f"answered {status}" in str(caught.value)


@pytest.mark.parametrize(("status", "uncertain"), [(500, True), (502, True), (504, True), (503, False),
                                                   (429, False), (409, False), (408, False)])
def test_a_transient_answer_is_retried_and_says_whether_it_may_have_happened(server: str, status: int,
                                                                              uncertain: bool) -> None:
    with pytest.raises(ProviderError) as caught:
        HttpProvider("messaging", server, 2.0).post(f"/{status}", "k", {})
    assert caught.value.uncertain is uncertain


def test_no_answer_within_the_timeout_may_have_happened(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not answer") as caught:
        HttpProvider("payment", server, 0.2).post("/slow", "k", {})
    assert caught.value.uncertain is True
    assert time.monotonic() - started < 0.55


def test_a_dropped_connection_is_sent_once_more_then_may_have_happened(server: str) -> None:
    Recorder.seen.clear()
    with pytest.raises(ProviderError, match="did not answer") as caught:
        HttpProvider("payment", server, 2.0).post("/drop", "k-drop", {})
    assert caught.value.uncertain is True
    assert [(r["path"], r["key"]) for r in Recorder.seen] == [("/pay/drop", "k-drop")] * 2


def test_a_connection_closed_before_the_answer_is_sent_again_with_the_same_key(server: str) -> None:
    """What a provider closing an idle kept-alive connection as we reuse it looks like: no byte of an answer."""
    Recorder.seen.clear()
    provider = HttpProvider("payment", server, 2.0)
    assert provider.post("/drop-once", "k-once", {"n": 1}).reference == "ref-1"
    assert [(r["path"], r["key"]) for r in Recorder.seen] == [("/pay/drop-once", "k-once")] * 2


def test_a_timeout_is_not_sent_again(server: str) -> None:
    Recorder.seen.clear()
    with pytest.raises(ProviderError, match="did not answer"):
        HttpProvider("payment", server, 0.2).post("/slow", "k-slow", {})
    time.sleep(0.5)
    assert [r["key"] for r in Recorder.seen] == ["k-slow"]


def test_a_refused_connection_did_not_happen() -> None:
    with pytest.raises(ProviderError, match="unreachable") as caught:
        HttpProvider("payment", f"http://127.0.0.1:{free_port()}/pay", 1.0).post("/charges", "k", {})
    assert caught.value.uncertain is False


@pytest.mark.parametrize("url", ["not a url", "ftp://example.invalid/x", "http://"])
def test_an_invalid_url_did_not_happen(url: str) -> None:
    with pytest.raises(ProviderError, match="unreachable") as caught:
        HttpProvider("payment", url, 1.0).post("/charges", "k", {})
    assert caught.value.uncertain is False
