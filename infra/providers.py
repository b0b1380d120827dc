"""HTTP clients for the third-party providers: payment, delivery and messaging.

Every call has a timeout and an idempotency key. Answers are sorted into three kinds the saga understands:
success (a reference), a permanent refusal (declined payment, invalid recipient: never retried) and a
transient failure (5xx, timeout, connection refused: retried).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
import urllib3


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


class HttpProvider:
    """A JSON-over-HTTP provider at base_url."""

    def __init__(self, name: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc look-ups in os.environ on every call
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def post(self, path: str, key: str, payload: dict[str, Any]) -> ProviderReply:
        """POST payload with Idempotency-Key `key`; raise ProviderError or ProviderRefused on failure."""
        try:
            response = self._session.post(
                f"{self.base_url}{path}", json=payload, headers={"Idempotency-Key": key}, timeout=self.timeout_s
            )
        except (requests.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
            raise ProviderError(f"{self.name} unreachable: {type(exc).__name__}", uncertain=False) from None
        except requests.ConnectionError as exc:
            raise ProviderError(f"{self.name} unreachable: {type(exc).__name__}", _maybe_sent(exc)) from None
        except requests.RequestException as exc:  # ReadTimeout and friends: the request went out
            raise ProviderError(f"{self.name} did not answer: {type(exc).__name__}", uncertain=True) from None
        return self._reply(response)

    def _reply(self, response: requests.Response) -> ProviderReply:
        body = _json(response)
        if response.status_code < 300:
            return ProviderReply(str(body.get("id", "")), body)
        detail = f"{self.name} answered {response.status_code}: {body.get('detail') or body.get('title') or ''}"
        if response.status_code == 402:
            raise PaymentDeclined(f"payment declined: {body.get('detail') or body.get('title') or 'no reason'}")
        if 400 <= response.status_code < 500 and response.status_code not in (408, 409, 425, 429):
            raise ProviderRefused(detail.strip())
        raise ProviderError(detail.strip(), uncertain=response.status_code not in NOT_PROCESSED)

    def close(self) -> None:
        self._session.close()


# Answers that say the request was not processed: safe to treat as "did not happen".
NOT_PROCESSED = frozenset({408, 409, 425, 429, 503})


def _maybe_sent(exc: requests.ConnectionError) -> bool:
    """A refused or failed connection sent nothing; a connection dropped mid-answer may have."""
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    return not isinstance(inner, urllib3.exceptions.NewConnectionError)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
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
