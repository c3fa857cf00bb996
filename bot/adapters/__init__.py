"""Adapters: the outside world behind the protocols of bot.app.ports."""
