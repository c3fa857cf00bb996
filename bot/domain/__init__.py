"""The deploy domain, pure: records, typed events, the state machine, the command grammar, plans,
analysis, checklists, windows and alert policy. Standard library only — no I/O, no boto3, no Slack, no SQL
(tests/test_architecture.py keeps it so)."""
