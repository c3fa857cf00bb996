"""Database backups (bot.app.ports.Backups): RDS snapshots for real, an in-memory fake for unit tests."""
