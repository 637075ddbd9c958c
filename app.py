"""Start incidentbot: `python app.py` (HTTP mode, or Socket Mode when SLACK_APP_TOKEN is set).

`python app.py --help` lists the commands and settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from incidentbot.config import ConfigError, Settings, load_settings

HOW_TO = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-…) from your app's "
                       "OAuth & Permissions page, after installing it to the workspace",
    "SLACK_SIGNING_SECRET": "the Signing Secret from your app's Basic Information page "
                            "(or set SLACK_APP_TOKEN, an xapp-… token with connections:write, "
                            "to use Socket Mode instead)",
}
COMMANDS = {
    "serve": "answer Slack and run incidents (the default)",
    "check": "check settings, the database and the Slack tokens, then exit (for CI/CD)",
}


def missing_message(missing: list[str]) -> str:
    lines = ["incidentbot cannot start: Slack credentials are missing.", ""]
    lines += [f"  {name}: {HOW_TO[name]}" for name in missing]
    lines += ["", "Set them in the environment or in a .env file (copy .env.example).",
              "Create the Slack app from manifests/ first; the README's 'Create the Slack app' "
              "section walks through it."]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    settings = "\n".join(f"  {name.upper():<28} default: {field.default!r}"
                         for name, field in Settings.model_fields.items())
    commands = "\n".join(f"  {name:<8} {what}" for name, what in COMMANDS.items())
    parsed = argparse.ArgumentParser(
        prog="python app.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="incidentbot: incident command inside Slack.\n\ncommands:\n" + commands,
        epilog="settings (environment or .env; see .env.example):\n" + settings)
    parsed.add_argument("command", nargs="?", choices=tuple(COMMANDS), default="serve",
                        help=argparse.SUPPRESS)
    parsed.add_argument("--migrate", action="store_true",
                        help="apply database migrations and exit (a deploy step)")
    return parsed


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"incidentbot cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    from incidentbot.checks import problems

    found = problems(settings.postmortem_template, settings.database_url)
    if found:
        print("incidentbot cannot start: " + " ".join(found), file=sys.stderr)
        return 2
    if args.migrate:
        return migrate_only(settings)
    missing = settings.missing_credentials()
    if missing:
        print(missing_message(missing), file=sys.stderr)
        return 2
    return check(settings) if args.command == "check" else run(settings)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (`LOG_FORMAT=json`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # Alembic's setup and APScheduler's every job run are only of interest when debugging
    for chatty in ("alembic", "apscheduler"):
        logging.getLogger(chatty).setLevel(
            logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)


def migrate_only(settings: Settings) -> int:
    """`python app.py --migrate`: apply database migrations and exit (a deploy step)."""
    from incidentbot.db import create_db_engine, migrate

    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        print(f"Migrations failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        return 3
    finally:
        engine.dispose()
    print("Database is up to date.")
    return 0


def check(settings: Settings) -> int:
    """`python app.py check`: the database answers and takes the migrations, Slack accepts
    the tokens. One line per check; exit 0 when all pass, 3 otherwise."""
    from incidentbot.db import create_db_engine, migrate
    from incidentbot.slack.gateway import SlackGateway, build_client, check_app_token

    results: list[tuple[str, str | None]] = []
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        results.append(("database", None))
    except SQLAlchemyError as exc:
        results.append(("database", database_problem(exc)))
    finally:
        engine.dispose()
    gateway = SlackGateway(build_client(settings.slack_bot_token, settings.slack_api_url))
    results.append(("SLACK_BOT_TOKEN", gateway.token_problem()))
    if settings.socket_mode:
        results.append(("SLACK_APP_TOKEN",
                        check_app_token(settings.slack_app_token, settings.slack_api_url)))
    for name, problem in results:
        print(f"{name}: {'ok' if problem is None else problem}")
    return 0 if all(problem is None for _name, problem in results) else 3


def database_problem(exc: SQLAlchemyError) -> str:
    return (f"the database at DATABASE_URL is unusable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})")


def run(settings: Settings) -> int:
    from incidentbot.core.services import CatalogError
    from incidentbot.server import AppTokenRefused, create_bot, serve_http, serve_socket_mode
    from incidentbot.slack.gateway import SlackCallFailed, token_problem

    try:
        bot = create_bot(settings)
    except CatalogError as exc:
        print(f"incidentbot cannot start: {exc}", file=sys.stderr)
        return 2
    except SlackCallFailed as exc:
        print(f"incidentbot cannot start: {token_problem(exc, settings.slack_api_url)}",
              file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"incidentbot cannot start: {database_problem(exc)}", file=sys.stderr)
        return 3
    logging.getLogger("incidentbot").info(
        "incidentbot %s starting in %s, database %s", package_version(),
        "Socket Mode" if settings.socket_mode else
        f"HTTP mode on http://{settings.host}:{settings.port}/slack/events",
        make_url(settings.database_url).render_as_string(hide_password=True))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if settings.socket_mode:
            serve_socket_mode(bot)
        else:
            serve_http(bot)
    except AppTokenRefused as exc:
        print(f"incidentbot cannot start: Slack refused SLACK_APP_TOKEN ({exc.error}); set it "
              f"to your app's app-level token (xapp-…) with the connections:write scope, from "
              f"the app's Basic Information page.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        bot.close()
    return 0


def package_version() -> str:
    try:
        return version("incidentbot")
    except PackageNotFoundError:
        return "(not installed)"


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    """Stop gracefully on SIGTERM (container stop): the server and scheduler shut down."""
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
