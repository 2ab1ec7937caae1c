import datetime as dt
from pathlib import Path

import pytest

from pipeline.config import ConfigError, Repair, load_config, parse_config
from tests.support import ROOT, build_params

TODAY = dt.date(2026, 11, 29)


def shipped() -> dict:
    return build_params()


def with_value(key: str, value: object) -> dict:
    raw = shipped()
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return raw


def test_shipped_params_load_with_documented_defaults():
    config = load_config(ROOT / "params.yaml", today=TODAY)
    real_bucket = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"  # never requested
    assert config.vision.listing_url == real_bucket
    assert config.vision.download_url == "https://data.binance.vision"
    assert (config.dataset.market, config.dataset.data_type, config.dataset.interval) == (
        "um",
        "klines",
        "1m",
    )
    assert config.dataset.start_date == dt.date(2019, 9, 25)
    assert config.dataset.contracts == "perpetual"
    assert config.lookback_days == 20
    assert config.as_of == TODAY
    assert config.last_date == dt.date(2026, 11, 28)
    assert config.lookback_start == dt.date(2026, 11, 9)
    assert (config.validate.stale_after_days, config.validate.late_share) == (7, 0.2)
    assert config.spans.max_gap_days == 30
    assert config.paths.validation == Path("metrics/validation.json")


def test_explicit_as_of_makes_the_run_reproducible():
    config = parse_config(with_value("run.as_of", "2024-03-01"), today=TODAY)
    assert config.as_of == dt.date(2024, 3, 1)
    assert config.last_date == dt.date(2024, 2, 29)


def test_config_is_frozen():
    config = parse_config(shipped(), today=TODAY)
    with pytest.raises(AttributeError):
        config.lookback_days = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dataset.market", "spot", "dataset.market must be one of um, cm (got 'spot')"),
        ("dataset.data_type", "candles", "dataset.data_type must be one of"),
        ("dataset.contracts", "delivery", "dataset.contracts must be one of perpetual, all"),
        ("volume.checksums", "sometimes", "volume.checksums must be one of multipart, always"),
        ("dataset.start_date", "2019-02-30", "dataset.start_date must be a date like 2019-09-25"),
        ("dataset.start_date", "2018-01-01", "dataset.start_date must be on or after 2019-09-25"),
        ("run.as_of", "2019-09-25", "dataset.start_date must be before run.as_of (2019-09-25)"),
        ("run.as_of", "2026-12-01", "run.as_of is in the future (2026-12-01): no file for it"),
        ("update.lookback_days", 0, "update.lookback_days must be at least 1 (got 0)"),
        ("update.lookback_days", "20", "update.lookback_days must be a whole number (got '20')"),
        ("probe.workers", True, "probe.workers must be a whole number (got True)"),
        ("probe.timeout_s", 0, "probe.timeout_s must be at least 0.1"),
        ("vision.listing_url", "s3://bucket", "vision.listing_url must be an http(s) URL"),
        ("validate.late_share", 0, "validate.late_share must be a fraction in (0, 1] (got 0.0)"),
        ("validate.late_share", 1.5, "validate.late_share must be a fraction in (0, 1]"),
        ("spans.max_gap_days", 0, "spans.max_gap_days must be at least 1 (got 0)"),
        ("paths.spans", "", "paths.spans must be a relative path inside the repository"),
        ("paths.dataset", "/tmp/availability", "paths.dataset must be a relative path inside"),
        ("paths.log", "../logs/pipeline.log", "paths.log must be a relative path inside the"),
        ("paths.plots", "metrics/../../plots", "paths.plots must be a relative path inside"),
        ("paths.symbols", "./", "paths.symbols must be a relative path inside the"),
        ("paths.gaps", 5, "paths.gaps must be a relative path inside the repository"),
        ("update.lookback_days", 1_000_000, "update.lookback_days must be at most 36500"),
        ("validate.stale_after_days", 10**30, "validate.stale_after_days must be at most"),
        ("spans.max_gap_days", 10**6, "spans.max_gap_days must be at most 36500 (got"),
        ("probe.timeout_s", float("nan"), "probe.timeout_s must be a finite number (got nan)"),
        ("probe.timeout_s", 1e300, "probe.timeout_s must be at most 3600.0 (got 1e+300)"),
        ("probe.backoff_s", float("inf"), "probe.backoff_s must be a finite number (got inf)"),
        ("validate.late_share", float("nan"), "validate.late_share must be a finite number"),
        ("run.repair", "all", "run.repair must be null or a mapping of symbols, since, until"),
        (
            "run.repair",
            {"from": "2024-01-01"},
            "run.repair.from is not a known key; remove it (known: since, symbols, until)",
        ),
        ("run.repair", {"sinse": "2024-01-01"}, "run.repair.sinse is not a known key; did you"),
        ("run.repair", {"symbols": "BTCUSDT"}, "run.repair.symbols must be null or a list of"),
        ("run.repair", {"symbols": []}, "run.repair.symbols must be null or a list of symbol"),
        ("run.repair", {"symbols": [" A"]}, "run.repair.symbols must be null or a list of symbol"),
        ("run.repair", {"since": "2024-02-30"}, "run.repair.since must be a date like 2019-09-25"),
        (
            "run.repair",
            {"since": "2019-09-24"},
            "run.repair.since 2019-09-24 is before dataset.start_date (2019-09-25)",
        ),
        (
            "run.repair",
            {"until": "2026-11-29"},
            "run.repair.until 2026-11-29 is after run.as_of - 1 (2026-11-28)",
        ),
        (
            "run.repair",
            {"since": "2024-05-02", "until": "2024-05-01"},
            "run.repair.since 2024-05-02 is after run.repair.until (2024-05-01)",
        ),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as error:
        parse_config(with_value(key, value), today=TODAY)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_repair_is_read_with_its_symbols_sorted_once_and_its_dates_optional():
    assert parse_config(shipped(), today=TODAY).repair is None
    scope = {"symbols": ["B", "A", "B"], "since": "2024-01-01", "until": None}
    assert parse_config(with_value("run.repair", scope), today=TODAY).repair == Repair(
        symbols=("A", "B"), since=dt.date(2024, 1, 1), until=None
    )
    every = parse_config(with_value("run.repair", {"until": "2026-11-28"}), today=TODAY)
    assert every.repair == Repair(symbols=None, since=None, until=dt.date(2026, 11, 28))
    empty = parse_config(with_value("run.repair", {}), today=TODAY)
    assert empty.repair == Repair(None, None, None)


def test_missing_key_is_named():
    raw = shipped()
    del raw["update"]["lookback_days"]
    with pytest.raises(ConfigError, match=r"update.lookback_days is missing"):
        parse_config(raw, today=TODAY)


def test_invalid_yaml_names_the_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("vision:\n  listing_url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml is not valid YAML at line"):
        load_config(params, today=TODAY)


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="not found: run from the repository root"):
        load_config(tmp_path / "params.yaml", today=TODAY)


def test_shipped_dates_are_strings_because_dvc_templating_refuses_yaml_dates():
    raw = shipped()
    assert isinstance(raw["dataset"]["start_date"], str)
    assert raw["run"]["as_of"] is None or isinstance(raw["run"]["as_of"], str)
    assert raw["run"]["repair"] is None  # set for one run only, by `make backfill` or `make audit`


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("update", "lookbak_days", "update.lookbak_days is not a known key; did you mean "),
        ("probe", "worker", "probe.worker is not a known key; did you mean probe.workers?"),
        ("paths", "plot", "paths.plot is not a known key; did you mean paths.plots?"),
        ("spans", "colour", "spans.colour is not a known key; remove it (known: max_gap_days)"),
    ],
)
def test_an_unknown_key_is_refused_with_the_closest_known_one(section, key, message):
    raw = shipped()
    raw[section][key] = 1
    with pytest.raises(ConfigError) as error:
        parse_config(raw, today=TODAY)
    assert str(error.value).startswith(f"params.yaml: {message}")
    assert "\n" not in str(error.value)


def test_an_unknown_section_is_refused_with_the_closest_known_one():
    raw = shipped()
    raw["valdate"] = {"late_share": 0.5}
    with pytest.raises(
        ConfigError, match=r"^params.yaml: valdate is not a known section; did you "
    ):
        parse_config(raw, today=TODAY)


def test_a_misspelt_key_that_hides_a_required_one_is_named_as_the_likely_cause():
    raw = shipped()
    raw["update"]["lookback_dayz"] = raw["update"].pop("lookback_days")
    with pytest.raises(ConfigError) as error:
        parse_config(raw, today=TODAY)
    assert str(error.value) == (
        "params.yaml: update.lookback_days is missing "
        "(is update.lookback_dayz a misspelling of it?)"
    )


def test_a_repair_reads_its_dates_as_known_keys():
    # Known keys come from what parse_config reads: a repair's own keys pass.
    scope = {"symbols": None, "since": "2024-01-01", "until": "2024-02-01"}
    assert parse_config(with_value("run.repair", scope), today=TODAY).repair == Repair(
        symbols=None, since=dt.date(2024, 1, 1), until=dt.date(2024, 2, 1)
    )
