"""HTTP clients for the third-party providers: payment, delivery and messaging.

Every call has a timeout and an idempotency key. Answers are sorted into three kinds the saga understands:
success (a reference), a permanent refusal (declined payment, invalid recipient: never retried) and a
transient failure (5xx, timeout, connection refused: retried).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from http.client import RemoteDisconnected
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
)


class ProviderError(Exception):
    """A transient failure: the call may succeed if tried again.

    uncertain: the request may have been carried out (a timeout while waiting for the answer, a dropped
    connection, a 500/502/504). Only a retry with the same idempotency key tells; nobody may assume it was not.
    """

    def __init__(self, message: str, uncertain: bool) -> None:
        super().__init__(message)
        self.uncertain = uncertain


class ProviderRefused(Exception):
    """A permanent refusal: trying again gives the same answer."""


class PaymentDeclined(ProviderRefused):
    """The payment provider declined the charge: a business outcome."""


@dataclass(frozen=True)
class ProviderReply:
    reference: str
    body: dict[str, Any]


# Failures that happen before the request leaves: nothing can have been carried out.
NOT_SENT = (NewConnectionError, ConnectTimeoutError, LocationValueError, ProxyError)


class HttpProvider:
    """A JSON-over-HTTP provider at base_url, called through one urllib3 connection pool (keep-alive, no
    automatic retries: the saga decides about retries, with the same idempotency key)."""

    def __init__(self, name: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._prefix = ""
        self._pool: urllib3.HTTPConnectionPool | None = None
        try:
            url = urllib3.util.parse_url(self.base_url)
            if url.scheme in ("http", "https") and url.host:
                self._prefix = url.path or ""
                self._pool = urllib3.connection_from_url(
                    self.base_url, maxsize=128, block=False, retries=False,
                    timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
        except LocationValueError:
            pass  # every call fails as "unreachable" (a configuration error the health probe shows)

    def post(self, path: str, key: str, payload: dict[str, Any]) -> ProviderReply:
        """POST payload with Idempotency-Key `key`; raise ProviderError or ProviderRefused on failure."""
        if self._pool is None:
            raise ProviderError(f"{self.name} unreachable: invalid URL {self.base_url!r}", uncertain=False)
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        try:
            try:
                response = self._pool.urlopen("POST", f"{self._prefix}{path}", body=body, headers=headers,
                                              preload_content=True)
            except ProtocolError as exc:
                if not _closed_before_answer(exc):
                    raise
                # A kept-alive connection the provider had closed while it sat idle in the pool (servers close
                # idle ones after a few seconds; the close races our reuse). Sent again once on a new
                # connection, with the same idempotency key, so the provider does the work at most once.
                response = self._pool.urlopen("POST", f"{self._prefix}{path}", body=body, headers=headers,
                                              preload_content=True)
        except NOT_SENT as exc:
            raise ProviderError(f"{self.name} unreachable: {type(exc).__name__}", uncertain=False) from None
        except (HTTPError, OSError) as exc:  # read timeout, connection dropped: the request went out
            raise ProviderError(f"{self.name} did not answer: {type(exc).__name__}", uncertain=True) from None
        return self._reply(response.status, response.data)

    def _reply(self, status: int, data: bytes) -> ProviderReply:
        body = _json(data)
        if status < 300:
            return ProviderReply(str(body.get("id", "")), body)
        detail = f"{self.name} answered {status}: {body.get('detail') or body.get('title') or ''}"
        if status == 402:
            raise PaymentDeclined(f"payment declined: {body.get('detail') or body.get('title') or 'no reason'}")
        if 400 <= status < 500 and status not in (408, 409, 425, 429):
            raise ProviderRefused(detail.strip())
        raise ProviderError(detail.strip(), uncertain=status not in NOT_PROCESSED)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _closed_before_answer(exc: ProtocolError) -> bool:
    """Whether the connection was closed with no byte of an answer (not a timeout, not a half answer)."""
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(cause, (RemoteDisconnected, ConnectionResetError, BrokenPipeError))


# Answers that say the request was not processed: safe to treat as "did not happen".
NOT_PROCESSED = frozenset({408, 409, 425, 429, 503})


def _json(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class PaymentClient(HttpProvider):
    def charge(self, key: str, order_id: int, customer_id: int, amount_cents: int) -> ProviderReply:
        return self.post("/charges", key, {"order_id": order_id, "customer_id": customer_id,
                                           "amount_cents": amount_cents})

    def refund(self, key: str, order_id: int, charge_id: str) -> ProviderReply:
        return self.post("/refunds", key, {"order_id": order_id, "charge_id": charge_id})


class DeliveryClient(HttpProvider):
    def ship(self, key: str, order_id: int, customer_id: int, book_id: int, qty: int) -> ProviderReply:
        return self.post("/shipments", key, {"order_id": order_id, "customer_id": customer_id,
                                             "book_id": book_id, "qty": qty})

    def cancel(self, key: str, order_id: int, shipment_id: str) -> ProviderReply:
        return self.post("/cancellations", key, {"order_id": order_id, "shipment_id": shipment_id})


class MessagingClient(HttpProvider):
    def send(self, key: str, order_id: int, customer_id: int, text: str) -> ProviderReply:
        return self.post("/messages", key, {"order_id": order_id, "customer_id": customer_id, "text": text})


@dataclass
class Providers:
    payment: PaymentClient
    delivery: DeliveryClient
    messaging: MessagingClient

    @classmethod
    def from_urls(cls, payment: str, delivery: str, messaging: str, timeout_s: float) -> Providers:
        return cls(PaymentClient("payment", payment, timeout_s), DeliveryClient("delivery", delivery, timeout_s),
                   MessagingClient("messaging", messaging, timeout_s))
