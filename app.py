"""Start incidentbot: `python app.py` (HTTP mode, or Socket Mode when SLACK_APP_TOKEN is set)."""

from __future__ import annotations

import logging
import signal
import sys

from sqlalchemy.exc import SQLAlchemyError

from incidentbot.config import ConfigError, Settings, load_settings

HOW_TO = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-…) from your app's "
                       "OAuth & Permissions page, after installing it to the workspace",
    "SLACK_SIGNING_SECRET": "the Signing Secret from your app's Basic Information page "
                            "(or set SLACK_APP_TOKEN, an xapp-… token with connections:write, "
                            "to use Socket Mode instead)",
}


def missing_message(missing: list[str]) -> str:
    lines = ["incidentbot cannot start: Slack credentials are missing.", ""]
    lines += [f"  {name}: {HOW_TO[name]}" for name in missing]
    lines += ["", "Set them in the environment or in a .env file (copy .env.example).",
              "Create the Slack app from manifests/ first; the README's 'Create the Slack app' "
              "section walks through it."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"incidentbot cannot start: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "--migrate" in argv:
        return migrate_only(settings)
    missing = settings.missing_credentials()
    if missing:
        print(missing_message(missing), file=sys.stderr)
        return 2
    return run(settings)


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


def run(settings: Settings) -> int:
    from incidentbot.core.services import CatalogError
    from incidentbot.server import AppTokenRefused, create_bot, serve_http, serve_socket_mode
    from incidentbot.slack.gateway import SlackCallFailed

    try:
        bot = create_bot(settings)
    except CatalogError as exc:
        print(f"incidentbot cannot start: {exc}", file=sys.stderr)
        return 2
    except SlackCallFailed as exc:
        print(f"incidentbot cannot start: Slack refused the bot token ({exc.error}). Check "
              f"SLACK_BOT_TOKEN (and SLACK_API_URL if you changed it).", file=sys.stderr)
        return 3
    except SQLAlchemyError as exc:
        print(f"incidentbot cannot start: the database at DATABASE_URL is unusable "
              f"({type(exc).__name__}: {str(exc).splitlines()[0]})", file=sys.stderr)
        return 3
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


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    """Stop gracefully on SIGTERM (container stop): the server and scheduler shut down."""
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
