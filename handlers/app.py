"""Wires the Slack app: one AsyncApp, every handler module's register(app, engine), one error handler."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import slack_ui
from bot.engine import Engine
from handlers import actions, approvals, commands, events
from handlers.events import HomeTab
from handlers.notifier import SlackNotifier
from handlers.roles import RoleResolver

log = logging.getLogger(__name__)


def build_app(
    engine: Engine,
    client: AsyncWebClient,
    signing_secret: str,
    notifier: SlackNotifier | None = None,
    home: HomeTab | None = None,
) -> AsyncApp:
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        request_verification_enabled=True,
        raise_error_for_unhandled_request=False,
        # Answer each request as soon as the listener returns, instead of bolt polling for the ack every
        # 10 ms: listeners ack with what they know and leave slow work to background tasks.
        process_before_response=True,
    )
    resolver = RoleResolver(client, engine.settings.roles)
    commands.register(app, engine, resolver)
    actions.register(app, engine, notifier, resolver)
    if home is not None:
        events.register(app, home)
    approvals.register(app, engine, resolver)

    @app.error
    async def on_error(error: Exception, body: dict[str, Any], respond: Any = None) -> None:
        # Never a stack trace to the user: log it, and say something went wrong, with no internals.
        log.exception("handler failed: %s", type(error).__name__, exc_info=error)
        if respond is not None and body.get("response_url"):
            try:
                await respond(
                    slack_ui.refused(
                        "Something went wrong on our side; it was logged. "
                        "Nothing was changed by this request."
                    ),
                    replace_original=False,
                )
            except Exception:
                log.exception("could not report the error to the user")

    return app
