"""What changes, as Slack shows it: a repository's commit messages and authors are untrusted text —
escaped (no @channel, no link, no mention), one line, cut short; at most 10 commits with a link to the
rest; a downgrade flagged; a provider's URL shown as plain text, only when it is a plain http(s) URL."""

from __future__ import annotations

from bot.app.evidence import MAX_COMMITS
from handlers.ui.change_blocks import changes_blocks, changes_lines


def commits(n: int, message: str = "fix", url: str = "https://github.example/c") -> list[dict]:
    return [{"sha": f"{i:012x}", "message": message, "author": "dev", "url": url} for i in range(n)]


def test_hostile_commit_messages_cannot_ping_link_or_break_lines():
    hostile = "<!channel> <@U0BOSS> <https://evil.example|click> &amp; \u202eevil\nsecond line"
    lines = changes_lines({"from": "v4", "to": "v5", "total": 1, "commits": commits(1, hostile), "url": ""})
    shown = "\n".join(lines)
    assert "<!channel>" not in shown and "<@U0BOSS>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt;" in shown and "&amp;amp;" in shown and "\u202e" not in shown
    assert len(lines) == 2 and "second line" in lines[1]  # one line per commit


def test_at_most_ten_commits_and_a_link_to_the_rest():
    shown = changes_lines(
        {
            "from": "v1",
            "to": "v20",
            "total": 38,
            "commits": commits(MAX_COMMITS),
            "url": "https://gh.example/cmp",
        }
    )
    assert shown[0].startswith("*What changes* v1 → v20 · 38 commits")
    assert len(shown) == 1 + MAX_COMMITS + 1 and shown[-1] == "… and 28 more: https://gh.example/cmp"
    assert all("<" not in line for line in shown)  # no link markup: a provider's URL is plain text


def test_a_downgrade_is_flagged_and_an_unsafe_url_is_not_a_link():
    shown = changes_lines(
        {"from": "v5", "to": "v4", "downgrade": True, "total": 0, "commits": [], "url": "javascript:x|y"}
    )
    assert "downgrade" in shown[0] and shown[-1] == "compare:"
    bad = {
        "from": "a",
        "to": "b",
        "total": 1,
        "commits": commits(1),
        "url": "https://ok.example/a|<!channel>",
    }
    assert changes_lines(bad)[-1] == "compare:"


def test_nothing_to_say_is_no_block_and_an_error_is_said():
    assert changes_blocks(None) == [] and changes_blocks({}) == []
    (block,) = changes_blocks({"from": "v1", "to": "v2", "error": "GitHub: 401 <!here>"})
    assert "commits not shown: GitHub: 401 &lt;!here&gt;" in block["text"]["text"]
