"""Parsing `/incident` text into a command, or a `UsageError` that says what is wrong."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity
from incidentbot.core.status import SETTABLE_STATUSES, Status
from incidentbot.slack.blocks import escape

USER_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$")
ROLE_NAMES = "|".join(role.value for role in Role)
SEVERITY_NAMES = "|".join(s.value for s in Severity)
STATUS_NAMES = "|".join(s.value for s in SETTABLE_STATUSES)


Parser = Callable[[list[str], str], "Command"]


class UsageError(Exception):
    """The command text is wrong; the message names the problem and the right form."""


def _shown(token: str, limit: int = 30) -> str:
    """A token of the user's to quote back in mrkdwn: shortened, its markup made inert."""
    short = token if len(token) <= limit else token[:limit] + "…"
    return escape(short)


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Declare:
    title: str  # empty: open the declare modal
    drill: bool = False


@dataclass(frozen=True)
class AssignRole:
    role: Role
    user_id: str


@dataclass(frozen=True)
class SetSeverity:
    severity: Severity


@dataclass(frozen=True)
class SetStatus:
    status: Status


@dataclass(frozen=True)
class ListOpen:
    pass


@dataclass(frozen=True)
class PostUpdate:
    pass


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class ShowTimeline:
    pass


@dataclass(frozen=True)
class Resolve:
    pass


@dataclass(frozen=True)
class Reopen:
    pass


@dataclass(frozen=True)
class DraftPostmortem:
    pass


@dataclass(frozen=True)
class AddAction:
    text: str
    owner_id: str
    due: date | None = None
    priority: str = "P2"


@dataclass(frozen=True)
class ListActions:
    pass


@dataclass(frozen=True)
class CommsDrafts:
    pass


@dataclass(frozen=True)
class PageService:
    service: str = ""


@dataclass(frozen=True)
class Stats:
    days: float = 30


@dataclass(frozen=True)
class OnCall:
    """Who is on call now, for every service or one."""

    service: str = ""


@dataclass(frozen=True)
class AdminJobs:
    """List failed jobs, or give one (`retry`) another set of attempts."""

    retry: int | None = None


Command = (Help | Declare | AssignRole | SetSeverity | SetStatus | ListOpen | PostUpdate | Note
           | ShowTimeline | Resolve | Reopen | DraftPostmortem | AddAction | ListActions | Stats
           | CommsDrafts | PageService | AdminJobs | OnCall)

# Commands that act on "this incident" and so need an incident channel.
NEEDS_INCIDENT = (AssignRole, SetSeverity, SetStatus, PostUpdate, Note, ShowTimeline, Resolve,
                  Reopen, DraftPostmortem, AddAction, ListActions, CommsDrafts, PageService)
ACTION_USAGE = "Use `/incident action <text> @owner [due YYYY-MM-DD] [P0-P3]`."
PRIORITY = re.compile(r"^[Pp]([0-3])$")
MAX_STATS_DAYS = 3650
MAX_NOTE = 3000


def parse(text: str) -> Command:
    """Turn the text after `/incident` into a command."""
    words = text.split()
    if not words:
        return Help()
    name, args = words[0].lower(), words[1:]
    parser = _PARSERS.get(name)
    if parser is None:
        raise UsageError(
            f"`{_shown(name)}` is not an incident command. Try `/incident declare <title>`, "
            "`role`, `severity`, `status`, `update`, `note`, `timeline`, `resolve`, "
            "`action`, `actions`, `comms`, `page`, `oncall`, `stats`, `list` or `help`."
        )
    return parser(args, text.strip()[len(words[0]):].strip())


def _help(_args: list[str], _rest: str) -> Command:
    return Help()


def _declare(args: list[str], rest: str) -> Command:
    words = rest.split()
    drill = bool(words) and words[0].lower() in ("--drill", "drill:")
    return Declare(title=" ".join(words[1:] if drill else words), drill=drill)


def _role(args: list[str], _rest: str) -> Command:
    usage = f"Use `/incident role {ROLE_NAMES} @person`."
    if len(args) < 2:
        raise UsageError(f"Say which role and who. {usage}")
    role = Role.parse(args[0])
    if role is None:
        raise UsageError(f"`{_shown(args[0])}` is not a role. {usage}")
    if len(args) > 2:
        raise UsageError(f"Name one person per role. {usage}")
    return AssignRole(role=role, user_id=parse_user(args[1], usage))


def parse_user(token: str, usage: str) -> str:
    """The user ID inside a Slack mention like `<@U123|name>`."""
    match = USER_MENTION.match(token)
    if match:
        return match.group(1)
    if token.startswith("<!") or token.startswith("<#"):
        raise UsageError(f"`{_shown(token, 40)}` is not a person. {usage}")
    raise UsageError(
        f"`{_shown(token, 40)}` is not a user mention: type @ and pick the person from the "
        f"list. {usage}"
    )


def _severity(args: list[str], _rest: str) -> Command:
    usage = f"Use `/incident severity {SEVERITY_NAMES}`."
    if len(args) != 1:
        raise UsageError(f"Give one severity. {usage}")
    severity = Severity.parse(args[0])
    if severity is None:
        raise UsageError(f"`{_shown(args[0])}` is not a severity. {usage}")
    return SetSeverity(severity=severity)


def _status(args: list[str], _rest: str) -> Command:
    usage = f"Use `/incident status {STATUS_NAMES}`."
    if len(args) != 1:
        raise UsageError(f"Give one status. {usage}")
    status = Status.parse(args[0])
    if status is None or status not in SETTABLE_STATUSES:
        raise UsageError(f"`{_shown(args[0])}` is not a status you can set. {usage}")
    return SetStatus(status=status)


def _list(_args: list[str], _rest: str) -> Command:
    return ListOpen()


def _update(_args: list[str], _rest: str) -> Command:
    return PostUpdate()


def _note(_args: list[str], rest: str) -> Command:
    if not rest:
        raise UsageError("Write the key event after the command: `/incident note <text>`.")
    if len(rest) > MAX_NOTE:
        raise UsageError(f"Keep a note to {MAX_NOTE} characters: `/incident note <text>`.")
    return Note(text=rest)


def _timeline(_args: list[str], _rest: str) -> Command:
    return ShowTimeline()


def _action(args: list[str], _rest: str) -> Command:
    owner: str | None = None
    due: date | None = None
    priority = "P2"
    words: list[str] = []
    tokens = iter(args)
    for token in tokens:
        lowered = token.lower()
        if token.startswith("<@"):
            if owner is not None:
                raise UsageError(f"Give an action item one owner. {ACTION_USAGE}")
            owner = parse_user(token, ACTION_USAGE)
        elif lowered == "due" or lowered.startswith("due:"):
            due = parse_due(lowered[4:] if ":" in lowered else next(tokens, ""))
        elif match := PRIORITY.match(token):
            priority = f"P{match.group(1)}"
        else:
            words.append(token)
    if not words:
        raise UsageError(f"Say what needs doing. {ACTION_USAGE}")
    if owner is None:
        raise UsageError(f"Name an owner: type @ and pick the person. {ACTION_USAGE}")
    return AddAction(text=" ".join(words), owner_id=owner, due=due, priority=priority)


def parse_due(text: str) -> date:
    """A due date written as YYYY-MM-DD."""
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else \
            _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str) -> date:
    shown = _shown(text) if text else "(nothing)"
    raise UsageError(f"`{shown}` is not a date: write the due date as YYYY-MM-DD. {ACTION_USAGE}")


def _stats(args: list[str], _rest: str) -> Command:
    usage = f"Use `/incident stats [days]` with 1 to {MAX_STATS_DAYS} days (default 30)."
    if not args:
        return Stats()
    try:
        days = float(args[0])
    except ValueError:
        raise UsageError(f"`{_shown(args[0])}` is not a number of days. {usage}") from None
    if len(args) > 1 or not 1 <= days <= MAX_STATS_DAYS:
        raise UsageError(usage)
    return Stats(days=days)


def _admin(args: list[str], _rest: str) -> Command:
    usage = "Use `/incident admin jobs` or `/incident admin retry <job id>`."
    if args == ["jobs"]:
        return AdminJobs()
    if len(args) == 2 and args[0].lower() == "retry" and args[1].isdigit():
        return AdminJobs(retry=int(args[1]))
    raise UsageError(usage)


def _no_args(command: type[Command]) -> Parser:
    return lambda _args, _rest: command()


_PARSERS = {
    "help": _help,
    "declare": _declare,
    "role": _role,
    "severity": _severity,
    "sev": _severity,
    "status": _status,
    "list": _list,
    "update": _update,
    "note": _note,
    "timeline": _timeline,
    "resolve": _no_args(Resolve),
    "reopen": _no_args(Reopen),
    "postmortem": _no_args(DraftPostmortem),
    "action": _action,
    "actions": _no_args(ListActions),
    "stats": _stats,
    "comms": _no_args(CommsDrafts),
    "page": lambda _args, rest: PageService(service=rest.strip()),
    "admin": _admin,
    "oncall": lambda _args, rest: OnCall(service=rest.strip()),
}
