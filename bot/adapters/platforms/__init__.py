"""Platforms implementing bot.app.ports.Platform: ecs.py (ECS + ALB weighted target groups), memory.py
(an in-memory fake for unit tests). A new platform is a new file here."""
