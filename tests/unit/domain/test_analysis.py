"""Judging one measurement and a whole bake (Argo Rollouts semantics), and the analysis table of the
config: pure, no metrics backend."""

from __future__ import annotations

import json

import pytest

from bot.app.ports import PlatformError as CloudError
from bot.config.analysis import from_toml
from bot.config.tables import ConfigError
from bot.domain.analysis import Analysis, AnalysisConfig, GroupMetrics, Measurement, error_measurement, judge

CONFIG = AnalysisConfig()
AT = 1_767_225_660.0
HEALTHY = GroupMetrics(requests=100, errors=0, latency_ms=80)
STABLE = GroupMetrics(requests=1000, errors=1, latency_ms=80)


def g(requests=100, errors=0, latency_ms=80.0) -> GroupMetrics:
    return GroupMetrics(requests, errors, latency_ms)


def verdict(canary, stable=STABLE, alarms=(), config=CONFIG) -> Measurement:
    return judge(config, canary, stable, list(alarms), AT, "canary 25%")


# --- judge: one rule at a time -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("canary", "stable", "config", "expected"),
    [
        pytest.param(HEALTHY, STABLE, CONFIG, "pass", id="healthy"),
        pytest.param(g(errors=None), STABLE, CONFIG, "pass", id="no-5xx-datapoint-is-zero-errors"),
        pytest.param(
            g(requests=None, errors=None, latency_ms=None), STABLE, CONFIG, "inconclusive", id="no-data"
        ),
        pytest.param(g(requests=49), STABLE, CONFIG, "inconclusive", id="below-min-requests"),
        pytest.param(g(requests=50), STABLE, CONFIG, "pass", id="exactly-min-requests"),
        pytest.param(g(errors=5), g(1000, 40), CONFIG, "pass", id="error-rate-at-threshold"),
        pytest.param(g(errors=6), g(1000, 50), CONFIG, "fail", id="error-rate-over-threshold"),
        pytest.param(g(errors=3), g(1000, 10), CONFIG, "pass", id="delta-at-limit"),
        pytest.param(g(errors=4), g(1000, 10), CONFIG, "fail", id="delta-over-limit"),
        pytest.param(
            g(errors=4),
            g(1000, 10),
            AnalysisConfig(max_error_rate_delta=None),
            "pass",
            id="delta-disabled",
        ),
        pytest.param(g(errors=4), g(49, 0), CONFIG, "pass", id="delta-needs-a-stable-baseline"),
        pytest.param(g(latency_ms=1000), None, CONFIG, "pass", id="latency-at-threshold"),
        pytest.param(g(latency_ms=1001), None, CONFIG, "fail", id="latency-over-threshold"),
        pytest.param(g(latency_ms=150), g(1000, 0, 100), CONFIG, "pass", id="ratio-at-limit"),
        pytest.param(g(latency_ms=151), g(1000, 0, 100), CONFIG, "fail", id="ratio-over-limit"),
        pytest.param(
            g(latency_ms=151),
            g(1000, 0, 100),
            AnalysisConfig(max_latency_ratio=None),
            "pass",
            id="ratio-disabled",
        ),
        pytest.param(g(latency_ms=900), g(10, 0, 100), CONFIG, "pass", id="ratio-needs-a-stable-baseline"),
        pytest.param(g(latency_ms=900), g(1000, 0, None), CONFIG, "pass", id="ratio-needs-stable-latency"),
        pytest.param(g(latency_ms=None), STABLE, CONFIG, "inconclusive", id="no-latency-data"),
        pytest.param(g(errors=50, latency_ms=None), STABLE, CONFIG, "fail", id="a-breach-beats-missing-data"),
        pytest.param(g(errors=4), None, CONFIG, "pass", id="no-stable-group-absolute-only"),
    ],
)
def test_judge_rules(canary, stable, config, expected):
    m = verdict(canary, stable, config=config)
    assert m.verdict == expected, m.reasons
    assert bool(m.reasons) == (expected != "pass")


def test_the_error_rate_reason_names_value_threshold_and_baseline():
    m = verdict(g(1000, 201, 80), g(1000, 1, 80))
    assert m.verdict == "fail"
    assert m.reasons == [
        "error rate 20.1% on the canary > 5.0% threshold (stable: 0.1%)",
        "error rate 20.1% on the canary is 20.0 points above the stable 0.1% (more than 2.0 allowed)",
    ]
    assert (m.canary.requests, m.canary.errors, m.canary.error_rate) == (1000, 201, pytest.approx(0.201))
    assert m.stable.error_rate == pytest.approx(0.001)
    assert (m.at, m.label, m.window_seconds, m.latency_statistic) == (AT, "canary 25%", 60, "Average")


def test_the_latency_reasons_name_value_statistic_threshold_and_baseline():
    m = verdict(g(latency_ms=1200), g(1000, 0, 80))
    assert m.reasons == [
        "latency 1200 ms (Average) on the canary > 1000 ms threshold (stable: 80 ms)",
        "latency 1200 ms (Average) on the canary is 15.00x the stable 80 ms (more than 1.50x allowed)",
    ]


def test_not_enough_traffic_is_inconclusive_and_says_how_much_was_needed():
    assert verdict(g(requests=12)).reasons == [
        "not enough traffic: 12 requests in 60s on the canary, at least 50 needed"
    ]
    none = verdict(GroupMetrics(None, None, None))
    assert none.reasons == ["not enough traffic: no requests in 60s on the canary, at least 50 needed"]
    assert none.canary.error_rate is None
    # Even a 100% error rate on 12 requests is not judged: too little data either way.
    assert verdict(g(requests=12, errors=12)).verdict == "inconclusive"


def test_no_latency_data_is_inconclusive_never_a_pass():
    m = verdict(g(latency_ms=None), config=AnalysisConfig(latency_statistic="p99"))
    assert m.verdict == "inconclusive"
    assert m.reasons == ["no latency data (p99 TargetResponseTime) for the canary in 60s: latency not judged"]


def test_without_a_usable_baseline_only_absolute_thresholds_apply_and_the_note_says_so():
    low = verdict(g(errors=4), g(20, 0))
    assert low.verdict == "pass"
    assert low.notes == [
        "stable baseline unavailable (20 requests in 60s, at least 50 needed): judged on absolute thresholds only"
    ]
    bad = verdict(g(errors=10), g(20, 0))
    assert bad.reasons == ["error rate 10.0% on the canary > 5.0% threshold (stable baseline unavailable)"]

    blue_green = verdict(g(errors=10), None)
    assert blue_green.stable is None
    assert blue_green.reasons == ["error rate 10.0% on the canary > 5.0% threshold (no stable baseline)"]
    assert blue_green.notes == ["no stable group to compare with: judged on absolute thresholds only"]

    absolute_only = AnalysisConfig(max_error_rate_delta=None, max_latency_ratio=None)
    assert verdict(HEALTHY, None, config=absolute_only).notes == []


def test_an_alarm_in_alarm_fails_the_measurement_whatever_the_traffic():
    alarm = {"name": "web-5xx", "reason": "Threshold Crossed: 1 datapoint [12.0] > 5.0"}
    m = verdict(HEALTHY, alarms=[alarm])
    assert m.verdict == "fail"
    assert m.reasons == [
        'CloudWatch alarm "web-5xx" is in ALARM: Threshold Crossed: 1 datapoint [12.0] > 5.0'
    ]
    quiet = verdict(GroupMetrics(), alarms=[{"name": "web-5xx", "reason": ""}])
    assert quiet.verdict == "fail"
    assert quiet.reasons == [
        'CloudWatch alarm "web-5xx" is in ALARM',
        "not enough traffic: no requests in 60s on the canary, at least 50 needed",
    ]
    assert m.alarms == [alarm]


def test_small_rates_keep_their_digits():
    m = verdict(g(10_000, 5, 80), g(10_000, 5, 80), config=AnalysisConfig(max_error_rate=0.0001))
    assert m.reasons[0] == "error rate 0.05% on the canary > 0.01% threshold (stable: 0.05%)"


def test_a_measurement_round_trips_through_json():
    m = verdict(g(1000, 201, 80), g(1000, 1, 80))
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    e = error_measurement(
        CONFIG, CloudError("CLOUDWATCH GetMetricData", "Throttling: Rate exceeded"), AT, "x"
    )
    assert Measurement.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    assert e.reasons == ["CLOUDWATCH GetMetricData failed: Throttling: Rate exceeded"]
    assert "canary 25% at 00:01:00 UTC: fail: canary 1000 requests, 20.1% errors, 80 ms" in m.line()


# --- a run: Argo's limits ----------------------------------------------------------------------------------
def of(verdict_: str) -> Measurement:
    return Measurement(at=AT, label="canary", verdict=verdict_, reasons=[] if verdict_ == "pass" else ["r"])


def statuses(config: AnalysisConfig, verdicts: str) -> list[str]:
    run = Analysis(config)
    out = []
    for v in verdicts.split():
        run.add(of(v))
        out.append(run.status)
    return out


def test_failure_limit_fails_once_failures_exceed_it():
    assert statuses(CONFIG, "pass fail") == ["running", "failed"]
    assert statuses(AnalysisConfig(failure_limit=1), "fail pass fail") == ["running", "running", "failed"]
    run = Analysis(AnalysisConfig(failure_limit=1), [of("fail"), of("pass"), of("fail")])
    assert (run.status, run.errored, run.reason) == (
        "failed",
        False,
        "2 failed measurements > failure limit 1",
    )


def test_inconclusive_limit_pauses_for_a_human():
    assert statuses(CONFIG, "inconclusive") == ["inconclusive"]
    assert statuses(AnalysisConfig(inconclusive_limit=1), "inconclusive pass inconclusive") == [
        "running",
        "running",
        "inconclusive",
    ]


def test_consecutive_errors_over_the_limit_fail_the_run_and_a_success_resets_the_count():
    assert statuses(CONFIG, "error error error error") == ["running"] * 4
    run = Analysis(CONFIG, [of("error")] * 5)
    assert (run.status, run.errored) == ("failed", True)
    assert run.reason == "5 measurement errors in a row > consecutive error limit 4"
    assert "Analysis errored" in run.summary()
    reset = Analysis(CONFIG, [of("error")] * 4 + [of("pass")] + [of("error")] * 4)
    assert (reset.status, reset.consecutive_errors) == ("running", 4)
    assert statuses(AnalysisConfig(consecutive_error_limit=0), "error") == ["failed"]


def test_failures_are_assessed_before_inconclusive_and_a_status_sticks():
    both = AnalysisConfig(failure_limit=0, inconclusive_limit=0)
    run = Analysis(both, [of("fail")])
    run.add(of("inconclusive"))
    run.add(of("pass"))
    assert run.status == "failed"
    assert run.finish() == "failed"


def test_a_finished_run_needs_a_passing_measurement_to_succeed():
    lenient = AnalysisConfig(failure_limit=2, inconclusive_limit=2)
    assert Analysis(lenient, [of("pass"), of("fail")]).finish() == "successful"
    nothing = Analysis(lenient, [of("fail"), of("inconclusive"), of("error")])
    assert nothing.finish() == "inconclusive"
    assert nothing.reason == "no measurement passed: the bake proved nothing"
    assert Analysis(CONFIG).finish() == "inconclusive"


def test_summary_has_counts_the_last_numbers_and_the_reasons():
    run = Analysis(AnalysisConfig(failure_limit=1))
    run.add(verdict(HEALTHY))
    run.add(verdict(g(1000, 201, 80), None))
    run.add(verdict(g(1000, 201, 80), None))
    text = run.summary()
    assert text.splitlines()[:2] == [
        "Analysis failed: 2 failed measurements > failure limit 1.",
        "3 measurements: 1 pass, 2 fail.",
    ]
    assert "canary 1000 requests, 20.1% errors, 80 ms" in text
    assert "error rate 20.1% on the canary > 5.0% threshold (no stable baseline)" in text
    assert "Note: no stable group to compare with" in text
    assert json.loads(json.dumps(run.to_dict()))["status"] == "failed"


# --- config ------------------------------------------------------------------------------------------------
WHERE = "config/deploybot.toml"
PREFIX = "environments.production.analysis"


def test_an_empty_table_gives_the_defaults_and_every_key_can_be_set():
    assert from_toml({}, WHERE, PREFIX) == AnalysisConfig()
    table = {
        "interval_seconds": 15,
        "window_seconds": 120,
        "min_requests": 200,
        "max_error_rate": 0.01,
        "max_error_rate_delta": False,
        "max_latency_ms": 500,
        "max_latency_ratio": 2,
        "latency_statistic": "p99",
        "alarms": ["web-5xx", "web-latency"],
        "failure_limit": 1,
        "consecutive_error_limit": 2,
        "inconclusive_limit": 3,
    }
    config = from_toml(table, WHERE, PREFIX)
    assert config == AnalysisConfig(
        interval_seconds=15.0,
        window_seconds=120,
        min_requests=200,
        max_error_rate=0.01,
        max_error_rate_delta=None,
        max_latency_ms=500.0,
        max_latency_ratio=2.0,
        latency_statistic="p99",
        alarms=("web-5xx", "web-latency"),
        failure_limit=1,
        consecutive_error_limit=2,
        inconclusive_limit=3,
    )
    assert AnalysisConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    service = from_toml(
        {"max_error_rate": 0.02}, WHERE, "services.web.environments.production.analysis", config
    )
    assert (service.max_error_rate, service.min_requests, service.max_error_rate_delta) == (0.02, 200, None)


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("max_error_rate", 5, "a rate within 0..1"),
        ("max_error_rate", "5%", "a rate within 0..1"),
        ("max_error_rate_delta", True, "or false to switch it off"),
        ("max_latency_ratio", 0.5, "a ratio >= 1"),
        ("window_seconds", 45, "whole minutes"),
        ("interval_seconds", 0, "seconds > 0"),
        ("min_requests", 0, "an integer >= 1"),
        ("min_requests", 10.5, "an integer >= 1"),
        ("latency_statistic", "P99", "a CloudWatch statistic"),
        ("alarms", "web-5xx", "a list of CloudWatch alarm names"),
        ("alarms", [""], "a list of CloudWatch alarm names"),
        ("failure_limit", -1, "an integer >= 0"),
        ("consecutive_error_limit", True, "an integer >= 0"),
    ],
)
def test_bad_values_name_file_key_and_expectation(key, value, expect):
    with pytest.raises(ConfigError) as caught:
        from_toml({key: value}, WHERE, PREFIX)
    assert (caught.value.path, caught.value.key) == (WHERE, f"{PREFIX}.{key}")
    assert expect in caught.value.problem and repr(value) in caught.value.problem
    assert str(caught.value).startswith(f"{WHERE}: {PREFIX}.{key}: expected ")


def test_unknown_keys_are_errors_with_the_nearest_known_key():
    with pytest.raises(ConfigError) as caught:
        from_toml({"max_error_rat": 0.1}, WHERE, PREFIX)
    assert caught.value.key == f"{PREFIX}.max_error_rat"
    assert caught.value.problem == 'unknown key (did you mean "max_error_rate"?)'
    with pytest.raises(ConfigError, match="expected a table"):
        from_toml(5, WHERE, PREFIX)  # type: ignore[arg-type]
