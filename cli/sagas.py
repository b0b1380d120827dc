"""`bookmarket sagas ...`: the support API from a terminal — find sagas, show one, act on one or in bulk (a dry
run first, then batches with a progress bar), read the audit log. Talks to a running API over HTTP."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import requests

from cli.tokens import read, tokens_file

ACTIONS = ("retry", "resume", "skip", "compensate", "cancel")


class CommandError(Exception):
    """A problem the API answered, or no API: printed, exit code 1."""


def add_parser(sub: Any) -> None:
    sagas = sub.add_parser("sagas", help="support: find sagas, show one, retry/resume/skip/compensate/cancel, bulk, "
                                         "audit (talks to the API)")
    sagas.add_argument("--url", default=os.environ.get("BOOKMARKET_URL", "http://127.0.0.1:8080"),
                       help="the API (BOOKMARKET_URL, http://127.0.0.1:8080)")
    sagas.add_argument("--token", default=os.environ.get("BOOKMARKET_TOKEN"),
                       help="a support (or viewer) token (BOOKMARKET_TOKEN; else the one `bookmarket up` keeps in "
                            "its data folder)")
    sagas.add_argument("--data-dir", default=os.environ.get("BOOKMARKET_DATA_DIR", "./var"))
    sagas.add_argument("--json", action="store_true", help="print the API's JSON")
    what = sagas.add_subparsers(dest="what", required=True)
    listing = what.add_parser("list", help="sagas matching the filters, newest first")
    _filters(listing)
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--page-size", type=int, default=20)
    _filters(what.add_parser("counts", help="how many sagas match, by status and by failing step"))
    show = what.add_parser("show", help="one saga: steps, every attempt, state changes, audit, allowed actions")
    show.add_argument("saga_id", type=int)
    for action in ACTIONS:
        one = what.add_parser(action, help=f"{action} one saga (a reason is required)")
        one.add_argument("saga_id", type=int)
        one.add_argument("--reason", required=True)
        if action == "resume":
            one.add_argument("--step", required=True, help="the step to run again")
    bulk = what.add_parser("bulk", help="one action on every saga matching the filters: a dry run, then batches")
    bulk.add_argument("action", choices=ACTIONS)
    bulk.add_argument("--reason", required=True)
    bulk.add_argument("--step", help="resume: the step to run again")
    bulk.add_argument("--yes", action="store_true", help="run without asking after the dry run")
    bulk.add_argument("--dry-run", action="store_true", help="only show what it would touch")
    bulk.add_argument("--batch-size", type=int, default=50)
    _filters(bulk)
    audit = what.add_parser("audit", help="the audit log, newest first")
    audit.add_argument("--saga", type=int)
    audit.add_argument("--page", type=int, default=1)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", action="append", default=[], help="repeat for several")
    p.add_argument("--kind", choices=("order", "cancel"))
    p.add_argument("--failing-step")
    p.add_argument("--error", help="text in the error or reason")
    p.add_argument("--order-id", type=int)
    p.add_argument("--customer-id", type=int)
    p.add_argument("--since", help="ISO 8601 with offset")
    p.add_argument("--until", help="ISO 8601 with offset")


def _filter_of(args: argparse.Namespace) -> dict[str, Any]:
    names = ("kind", "failing_step", "error", "order_id", "customer_id", "since", "until")
    found: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.status:
        found["status"] = args.status
    return found


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        except requests.RequestException as exc:
            raise CommandError(f"cannot reach the API at {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = f"{body.get('title', '')}: {body.get('detail', '')}"
            except ValueError:
                detail = response.text[:200]
            raise CommandError(f"{response.status_code} {detail}")
        return response.json()


def token_from(args: argparse.Namespace) -> str | None:
    """--token / BOOKMARKET_TOKEN, else the first support (or viewer) token of the file `bookmarket up` keeps."""
    if args.token:
        return str(args.token)
    path = tokens_file(Path(args.data_dir))
    if not path.exists():
        return None
    entries = read(path)[0]
    for role in ("support", "viewer"):
        for entry in entries:
            name, _, token = entry.partition("=")
            if name.split(":")[0] == role and not token.startswith("sha256:"):
                return token
    return None


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        ask: Callable[[str], str] = input) -> int:
    client = Client(args.url, token_from(args))
    try:
        return _run(client, args, out, err, ask)
    except CommandError as exc:
        print(f"bookmarket sagas: {exc}", file=err)
        return 1


def _run(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO, ask: Callable[[str], str]) -> int:
    if args.what == "list":
        rows = client.call("GET", "/admin/sagas", params={**_filter_of(args), "page": args.page,
                                                          "page_size": args.page_size})
        _print(out, args, rows, _table(rows, ("id", "kind", "status", "failing_step", "order_id", "customer_id",
                                               "created_at", "error")))
    elif args.what == "counts":
        counts = client.call("GET", "/admin/sagas/counts", params=_filter_of(args))
        text = "\n".join([f"{k:>14}  {v}" for k, v in counts["by_status"].items()]
                         + ["failing steps:"] + [f"{k:>14}  {v}" for k, v in counts["by_failing_step"].items()])
        _print(out, args, counts, text)
    elif args.what == "show":
        view = client.call("GET", f"/admin/sagas/{args.saga_id}")
        _print(out, args, view, _timeline(view))
    elif args.what in ACTIONS:
        body = {"reason": args.reason, **({"step": args.step} if args.what == "resume" else {})}
        result = client.call("POST", f"/admin/sagas/{args.saga_id}/{args.what}", json=body)
        _print(out, args, result, f"saga {result['saga_id']}: {args.what} done ({result['state_before']} -> "
                                  f"{result['state_after']}), audit entry {result['audit_id']}")
    elif args.what == "bulk":
        return _bulk(client, args, out, err, ask)
    else:
        entries = client.call("GET", "/admin/audit", params={"page": args.page,
                                                             **({"saga_id": args.saga} if args.saga else {})})
        _print(out, args, entries, _table(entries, ("id", "at", "actor", "action", "saga_id", "state_before",
                                                    "state_after", "outcome", "reason")))
    return 0


def _bulk(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO, ask: Callable[[str], str]) -> int:
    body = {"action": args.action, "reason": args.reason, "filter": _filter_of(args),
            **({"step": args.step} if args.step else {})}
    plan = client.call("POST", "/admin/bulk", json=body)
    shown = ", ".join(f"{s['saga_id']} ({s['state']})" for s in plan["sagas"][:20])
    more = f" and {plan['total'] - 20} more" if plan["total"] > 20 else ""
    print(f"dry run: {args.action} would touch {plan['total']} saga(s): {shown}{more}", file=out)
    print(f"token: {plan['token']}", file=out)
    if args.dry_run or plan["total"] == 0:
        return 0
    if not args.yes and ask(f"{args.action} these {plan['total']} saga(s)? [y/N] ").strip().lower() not in ("y",
                                                                                                            "yes"):
        print("nothing done", file=out)
        return 0
    progress = plan
    while not progress["finished"]:
        progress = client.call("POST", f"/admin/bulk/{plan['token']}/run", json={"batch_size": args.batch_size})
        _bar(err, progress["done"], progress["total"])
    print(file=err)
    print(f"done: {progress['touched']} touched, {progress['skipped']} skipped (no longer in the state the dry run "
          f"showed); see `bookmarket sagas audit`", file=out)
    return 0


def _bar(err: TextIO, done: int, total: int, width: int = 40) -> None:
    filled = width * done // max(total, 1)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=err, flush=True)


def _print(out: TextIO, args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text, file=out)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c) if r.get(c) is not None else "") [:60] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _timeline(view: dict[str, Any]) -> str:
    lines = [f"saga {view['id']} ({view['kind']}, order {view['order_id']}, customer {view['customer_id']}): "
             f"{view['state']}" + (f" — {view['reason']}" if view.get("reason") else "")]
    for step in view["steps"]:
        lines.append(f"  {step['name']:<16} {step['status']:<12} attempts {step['attempts']}/{step['max_attempts']}"
                     + (" outcome unknown" if step.get("outcome_unknown") else ""))
        for attempt in step.get("attempt_history", []):
            lines.append(f"      #{attempt['attempt']} {attempt['outcome']:<10} {attempt.get('started_at') or ''} "
                         f"{attempt.get('error') or ''}".rstrip())
    lines.append("  state changes: " + ", ".join(f"{c['status']} ({c['by']}, {c['at']})"
                                                for c in view["state_changes"]))
    for entry in view["audit"]:
        lines.append(f"  audit #{entry['id']} {entry['at']} {entry['actor']} {entry['action']} "
                     f"{entry['state_before']} -> {entry['state_after']} ({entry['outcome']}): {entry['reason']}")
    lines.append("  actions: " + (", ".join(view["actions"]) or "none"))
    return "\n".join(lines)
