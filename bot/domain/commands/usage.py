"""The words people are shown about the commands' shapes: every form's usage line and example, the
options each form takes, the USAGE texts and help_text(); the command's name, and how a typed word is
quoted in a message. Errors carry the usage line of their form."""

from __future__ import annotations

from bot.domain.commands.types import COMMANDS, SUBCOMMANDS, CommandError

# Every form: key -> (usage line, example). Errors carry the line of the form being parsed.
FORMS: dict[str, tuple[str, str]] = {
    "deploy": (
        "/deploy SERVICE[/VERSION] [VERSION] [to ENV] [--strategy rolling|blue-green|canary] [--dry-run]"
        ' [--reason "..."] [--emergency "..."] [--window] [--at "TIME"] [--pipeline [NAME]]',
        '/deploy web v2.3.1 to production --strategy canary --reason "fix login redirect"',
    ),
    "status": ("/deploy status [SERVICE|ID]", "/deploy status web"),
    "history": ("/deploy history SERVICE [in ENV]", "/deploy history web in production"),
    "help": ("/deploy help", "/deploy help"),
    "lock": ("/deploy lock SERVICE ENV REASON...", "/deploy lock web production database migration running"),
    "unlock": ("/deploy unlock SERVICE ENV", "/deploy unlock web production"),
    "audit": ("/deploy audit ID", "/deploy audit 42"),
    "approve": ("/deploy approve ID", "/deploy approve 42"),
    "reject": ("/deploy reject ID REASON...", "/deploy reject 42 migration not tested on a copy of prod"),
    "restore": ("/deploy restore ID REASON...", "/deploy restore 42 the v3 migration dropped refunds"),
    "note": ("/deploy note ID TEXT...", "/deploy note 42 error spike at 14:05, gone after the rollback"),
    "schedule": ("/deploy schedule", "/deploy schedule"),
    "windows": ("/deploy windows SERVICE [in ENV]", "/deploy windows web in production"),
    "freeze": (
        "/deploy freeze ENV until TIME REASON...",
        '/deploy freeze production until "2026-12-24 18:00 Europe/Berlin" holiday freeze',
    ),
    "unfreeze": ("/deploy unfreeze ENV", "/deploy unfreeze production"),
    "report": ("/deploy report [SERVICE] [in ENV]", "/deploy report web in production"),
    "promote": (
        "/promote SERVICE from ENV to ENV [--allow-downgrade]",
        "/promote web from staging to production",
    ),
    "promote-id": ("/promote ID [--full]", "/promote 42 --full"),
    "rollback": (
        '/rollback SERVICE [in ENV] [to VERSION] [--gradual] [--reason "..."] [--emergency "..."]',
        '/rollback web in production to v2.3.0 --reason "errors after v2.3.1"',
    ),
    # /flag: "flag" is the whole command's line (errors before the form is known); the others its forms.
    "flag": (
        "/flag list|KEY [on|off|PERCENT%|on for WHO|variants V=W,...|rollout|kill] [in ENV] [--dry-run]"
        ' [--reason "..."] [--steps 5,25,50,100]',
        "/flag checkout-v2 25% in staging",
    ),
    "flag-list": ("/flag list [in ENV]", "/flag list in production"),
    "flag-show": ("/flag KEY [in ENV]", "/flag checkout-v2 in production"),
    "flag-on": ("/flag KEY on|off in ENV", "/flag checkout-v2 on in staging"),
    "flag-percent": ("/flag KEY PERCENT% in ENV", "/flag checkout-v2 25% in staging"),
    "flag-target": (
        "/flag KEY on for ATTRIBUTE=VALUE[,VALUE...]|segment NAME [and ...] in ENV",
        "/flag checkout-v2 on for region=eu-west-1,eu-central-1 in staging",
    ),
    "flag-variants": (
        "/flag KEY variants VARIANT=WEIGHT,VARIANT=WEIGHT... in ENV",
        "/flag search-ranking variants control=50,treatment=50 in staging",
    ),
    "flag-rollout": (
        "/flag KEY rollout in ENV [--steps 5,25,50,100]",
        "/flag checkout-v2 rollout in production --steps 5,25,50,100",
    ),
    "flag-kill": ("/flag KEY kill in ENV", '/flag checkout-v2 kill in production --reason "checkout errors"'),
}
FLAG_FORMS = (
    "flag-list",
    "flag-show",
    "flag-on",
    "flag-percent",
    "flag-target",
    "flag-variants",
    "flag-rollout",
    "flag-kill",
)

# Options per form: name -> metavar shown in errors (None: a switch that takes no value).
FLAGS: dict[str, dict[str, str | None]] = {
    "deploy": {
        "strategy": "canary",
        "dry-run": None,
        "reason": '"fix login redirect"',
        "emergency": '"checkout is down"',
        "window": None,
        "at": '"2026-12-01 18:00 Europe/Berlin"',
        "pipeline": None,  # its optional NAME is read by grammar_deploy before the other options
    },
    "rollback": {"gradual": None, "reason": '"errors after v2.3.1"', "emergency": '"checkout is down"'},
    "promote": {"full": None, "allow-downgrade": None},
    "lock": {"reason": '"database migration running"'},
    "freeze": {"reason": '"holiday freeze"'},
    "flag": {"dry-run": None, "reason": '"checkout errors"', "steps": "5,25,50,100"},
}

_DEPLOY_OPTIONS = """\
Options for /deploy (anywhere after the service):
  --strategy rolling|blue-green|canary   how to roll out (also --strategy=canary)
  --dry-run              show the plan, change nothing
  --reason "..."         why, kept with the deployment
  --emergency "..."      an emergency deploy, with its justification
  --window               wait for the service's deploy window
  --at "TIME"            start at TIME
  --pipeline [NAME]      through the pipeline's environments in order, tests between them
Without a version, the version running now is redeployed. Without an environment, the default is used \
(when one is configured). hubot forms work too: `deploy web/v2 to production`."""

_FLAG_NOTES = """\
Reads (answered to you alone) may leave out "in ENV": every environment is shown. A change (answered in \
the channel) always says "in ENV"; it never falls back to a default environment.
  PERCENT%       the on variant for that share of users (by targetingKey, stable: a user in at 5% is in at \
25%), the others the off variant; 0 to 100, at most two decimals (25%, 0.5%)
  on for WHO     the on variant for contexts matching every part (parts separated by spaces or "and"):
      region=eu-west-1                 equals
      region=eu-west-1,eu-central-1    is one of (in)
      region!=us-east-1,us-west-2      is none of (not in)
      email^=qa-,test-                 starts with (one of)
      version>=2.3.0                   a version at least (dotted numbers, v optional)
      segment beta (or beta, or segment=beta)   a segment declared in [segments.NAME]
  variants       an A/B split: each variant of that flag its weight; the weights add up to 100
  rollout        the on variant through the environment's rollout steps (or --steps: rising whole \
percentages ending at 100), judged on the flag's metrics at each step; a failure turns it off
  kill           off for everyone at once (the kill switch): no approval, no freeze
Options (anywhere): --dry-run (show what would change, change nothing), --reason "..." (kept in the \
audit trail), --steps (rollout only)."""


def line(key: str) -> str:
    """The usage line of form `key`."""
    return FORMS[key][0]


def example(key: str) -> str:
    """The example of form `key`."""
    return FORMS[key][1]


def _usage_text(keys: tuple[str, ...], footer: str = "") -> str:
    lines = ["Usage:"]
    for key in keys:
        usage, shown = FORMS[key]
        lines.append(f"  {usage}")
        lines.append(f"      e.g. `{shown}`")
    return "\n".join(lines) + (f"\n{footer}" if footer else "")


USAGE: dict[str, str] = {
    "/deploy": _usage_text(("deploy", *SUBCOMMANDS), _DEPLOY_OPTIONS),
    "/promote": _usage_text(
        ("promote", "promote-id"),
        "/promote ID moves on a deployment that is waiting (a canary, say); --full promotes it all the way."
        " A promotion that would lower the target's version is refused unless you add --allow-downgrade.",
    ),
    "/rollback": _usage_text(
        ("rollback",),
        "Without `to VERSION`, rolls back to the version before the current one. --gradual shifts traffic"
        " back step by step instead of at once. Without an environment, the default is used. A rollback to"
        " a version that succeeded there skips manual items and approvals; any other version is refused"
        ' (deploy it instead), unless an allowed role breaks glass with --emergency "reason".',
    ),
    "/flag": _usage_text(FLAG_FORMS, _FLAG_NOTES),
}


def command_name(command: str) -> str:
    """ "/deploy", "/promote", "/rollback" or "/flag" for `command` (any case, the slash optional), or
    CommandError."""
    name = str(command or "").strip().lower()
    if not name.startswith("/"):
        name = "/" + name
    if name not in COMMANDS:
        raise CommandError(
            f"Unknown command {quoted(name)}. Commands: {', '.join(COMMANDS)}.",
            "\n".join(line(key) for key in ("deploy", "promote", "rollback", "flag")),
        )
    return name


def help_text(command: str) -> str:
    """The help for "/deploy", "/promote", "/rollback" or "/flag" (the slash is optional). /deploy's help
    is the whole tool: it ends with the other commands (`/flag help` tells the rest of /flag)."""
    name = command_name(command)
    if name != "/deploy":
        return USAGE[name]
    others = _usage_text(("promote", "promote-id", "rollback", "flag"), "`/flag help` tells all of /flag.")
    others = others.replace("Usage:", "The other commands:", 1)
    return f"{USAGE[name]}\n{others}"


def clip(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters with an ellipsis, for quoting it in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(word: str) -> str:
    """A word the person typed, quoted (and clipped) in a message."""
    return f'"{clip(word)}"'
