"""Slack adapter: Bolt app factory, listeners, Block Kit builders and the Web API gateway."""
