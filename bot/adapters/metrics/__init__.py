"""Metrics backends implementing bot.app.ports.Metrics: cloudwatch.py, memory.py (a fake for tests)."""
