import datetime as dt
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 29)


def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


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
        ("paths.spans", "", "paths.spans must be a relative path (got '')"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as error:
        parse_config(with_value(key, value), today=TODAY)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


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
