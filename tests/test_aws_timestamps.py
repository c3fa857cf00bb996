"""The bot's timestamp parser for boto3 responses (bot.adapters.aws.aws_timestamp) reads every form AWS
answers as botocore's own parser does: the same instant, timezone-aware."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import botocore.utils
import pytest

from bot.adapters.aws import Aws, aws_timestamp
from bot.config.model import AwsSettings

FORMS = [
    1764700000,  # ECS, JSON protocol: epoch seconds
    1764700000.123456,
    0,
    "1764700000",
    "1764700000.5",
    "2026-12-03T08:00:00Z",  # the query and XML protocols: ISO 8601
    "2026-12-03T08:00:00.123Z",
    "2026-12-03T08:00:00.123456+00:00",
    "2026-12-03T10:00:00+02:00",
    "Thu, 03 Dec 2026 08:00:00 GMT",  # RFC 822, in headers
]


@pytest.mark.parametrize("value", FORMS, ids=[repr(v) for v in FORMS])
def test_every_form_is_the_instant_botocore_reads(value):
    ours, theirs = aws_timestamp(value), botocore.utils.parse_timestamp(value)
    assert ours.tzinfo is not None
    assert ours == theirs  # aware datetimes: the same instant, whatever zone each is shown in
    assert ours.timestamp() == pytest.approx(theirs.timestamp(), abs=1e-6)


def test_an_iso_time_without_a_zone_is_utc_and_nonsense_is_refused_as_botocore_refuses_it():
    assert aws_timestamp("2026-12-03T08:00:00") == datetime(2026, 12, 3, 8, tzinfo=UTC)
    with pytest.raises(ValueError):
        aws_timestamp("not a time")
    with pytest.raises(ValueError):
        botocore.utils.parse_timestamp("not a time")


def test_the_bots_clients_parse_with_it(monkeypatch):
    """A DescribeServices answered by a local HTTP server (port 0) through the bot's client: its times
    come back in UTC, as aws_timestamp gives them (botocore's parser gives the local zone)."""
    answer = json.dumps(
        {"services": [{"serviceName": "web", "createdAt": 1764700000.5,
                       "events": [{"id": "e1", "createdAt": 1764700001, "message": "steady"}]}],
         "failures": []}
    ).encode()  # fmt: skip

    class Ecs(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = HTTPServer(("127.0.0.1", 0), Ecs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = Aws(AwsSettings(region="us-east-1", endpoint_url=url)).client("ecs")
        service = client.describe_services(cluster="c", services=["web"])["services"][0]
    finally:
        server.shutdown()
    assert service["createdAt"] == datetime(2025, 12, 2, 18, 26, 40, 500000, tzinfo=UTC)
    assert service["createdAt"].tzinfo is UTC and service["events"][0]["createdAt"].tzinfo is UTC
