"""What follows an ack, handed from the process that answers Slack to a worker.

The serving process runs each listener as before (parse, validate, ack), but what the
listener asks to run after its ack is not run there: the request itself is stored in the
inbox (or the spool that feeds it, `incidentbot.spool`) before Slack gets its answer, and a
worker replays it through its own Bolt app, where the same listener runs again and does the
work. So answers to Slack never share an interpreter with opening channels or modals, and
acknowledged work survives a crash.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from sqlalchemy.exc import SQLAlchemyError

from incidentbot.inbox import Job
from incidentbot.slack.gateway import SlackCallFailed, SlackGateway

log = logging.getLogger(__name__)

Call = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


def _done(result: object = None) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(result)
    return future


class InlineWork(Executor):
    """A worker's `work`: the listener is already off Slack's clock, so run it right here."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class Handoff(Executor):
    """The serving process's `work`: collects what a listener asks to run after its ack.

    `dispatch` (around Bolt's) then stores the request in the inbox (`store`) and a worker
    replays it. Requests that cannot be stored (unsigned, from Socket Mode, or the database
    refused the insert, or the disk the spool) run on `local` instead, so nothing
    acknowledged is dropped.
    """

    def __init__(self, local: Executor, store: Callable[[str, str, str], bool],
                 remember: Callable[[str], bool]) -> None:
        self._local = local
        self._store = store
        self._remember = remember
        self._asked = threading.local()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        calls: list[Call] | None = getattr(self._asked, "calls", None)
        if calls is None:  # not inside `admit`: nothing to store, run it here
            return self._local.submit(fn, *args, **kwargs)
        calls.append((fn, args, kwargs))
        return _done()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._local.shutdown(wait=wait, cancel_futures=cancel_futures)

    def dispatch(self, request: BoltRequest,
                 run: Callable[[BoltRequest], BoltResponse]) -> BoltResponse:
        """Run the request through Bolt (`run`), then, before Slack gets the answer, store it
        if its listener asked for work, else record its signature in the replay ledger
        (channel events are recorded by admission). A replay is refused with a 401."""
        with self._collecting() as calls:
            response = run(request)
        if request.body.get("type") == "event_callback" and not calls:
            return response
        signature = request_signature(request)
        if not signature or response.status != 200:
            self._run_here(calls)
            return response
        try:
            fresh = (self._store(signature, request.raw_body, _content_type(request)) if calls
                     else self._remember(signature))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("Inbox unavailable (%s); running the work in this process",
                        type(exc).__name__)
            self._run_here(calls)
            return response
        if not fresh:
            log.warning("Refused a replayed request")
            return BoltResponse(status=401, body="")
        return response

    @contextmanager
    def _collecting(self) -> Iterator[list[Call]]:
        self._asked.calls = []
        try:
            yield self._asked.calls
        finally:
            self._asked.calls = None

    def _run_here(self, calls: list[Call]) -> None:
        for fn, args, kwargs in calls:
            self._local.submit(fn, *args, **kwargs)


def request_signature(request: BoltRequest) -> str:
    """The request's `X-Slack-Signature` ("" for Socket Mode requests, which have none)."""
    return next(iter(request.headers.get("x-slack-signature") or []), "")


def _content_type(request: BoltRequest) -> str:
    return next(iter(request.headers.get("content-type") or []), "application/json")


class Replayer:
    """A worker's side: run an inbox job's request through the worker's Bolt app (built
    with `request_verification_enabled=False`: the serving process verified it)."""

    def __init__(self, app: App, gateway: SlackGateway) -> None:
        self._app = app
        self._gateway = gateway

    def __call__(self, job: Job) -> None:
        request = BoltRequest(body=job.body, headers={"content-type": [job.content_type]})
        response = self._app.dispatch(request)
        errors = _form_errors(response)
        if errors:
            self._tell_refused(request.body, errors)

    def _tell_refused(self, body: dict[str, Any], errors: dict[str, Any]) -> None:
        """The form passed validation when Slack was answered, but not when its work ran
        (a person looked up again, an incident closed meanwhile): say so, never drop it."""
        user = (body.get("user") or {}).get("id", "")
        if not user:
            return
        reasons = "; ".join(str(reason) for reason in errors.values())
        try:
            self._gateway.post_message(
                user, f":warning: Your form was received but could not be applied: {reasons}. "
                      "Please open it again.")
        except SlackCallFailed as exc:
            log.error("Could not tell %s that their form was refused: %s", user, exc)


def _form_errors(response: BoltResponse) -> dict[str, Any]:
    if response.status != 200 or not response.body.startswith("{"):
        return {}
    try:
        answer = json.loads(response.body)
    except ValueError:
        return {}
    errors = answer.get("errors") if answer.get("response_action") == "errors" else None
    return errors if isinstance(errors, dict) else {}
