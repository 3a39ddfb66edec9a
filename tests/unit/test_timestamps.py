from datetime import datetime, timedelta, timezone

import pytest

from dmf.core.errors import DmfError, InputError
from dmf.core.timestamps import TS_FORMAT, format_ts, parse_ts, utcnow

UTC = timezone.utc


def test_parse_string_is_utc():
    assert parse_ts("20181001122613") == datetime(2018, 10, 1, 12, 26, 13, tzinfo=UTC)


def test_parse_int_as_prefect_passes_it():
    assert parse_ts(20250101120000) == datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_naive_datetime_is_read_as_utc():
    assert parse_ts(datetime(2025, 1, 1, 12)) == datetime(2025, 1, 1, 12, tzinfo=UTC)


def test_aware_datetime_is_converted_to_utc():
    paris = timezone(timedelta(hours=2))
    parsed = parse_ts(datetime(2025, 6, 1, 14, 0, tzinfo=paris))
    assert parsed == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["20181001122613", "20241231235959", "20240229000000", "00010101000000",
                                  "09990101000000"])
def test_format_then_parse_round_trips(text):
    assert format_ts(parse_ts(text)) == text
    assert parse_ts(format_ts(parse_ts(text))) == parse_ts(text)


def test_format_reads_naive_as_utc_and_converts_aware():
    assert format_ts(datetime(2018, 10, 1, 12, 26, 13)) == "20181001122613"
    assert format_ts(datetime(2018, 10, 1, 14, 26, 13, tzinfo=timezone(timedelta(hours=2)))) == "20181001122613"


def test_ts_format_matches_format_ts():
    moment = datetime(2018, 10, 1, 12, 26, 13, tzinfo=UTC)
    assert moment.strftime(TS_FORMAT) == format_ts(moment)


def test_utcnow_is_aware_utc_whole_seconds():
    now = utcnow()
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond == 0
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)


@pytest.mark.parametrize("value", [
    "2025",               # too short
    "202501011200000",    # too long
    "2025010112000a",     # not a digit
    " 20250101120000",    # surrounding space
    "2025-01-01T12:00",   # ISO, not our format
    "٢٠٢٥٠١٠١١٢٠٠٠٠",     # non-ASCII digits pass str.isdigit()
    "20251301000000",     # month 13
    "20250230000000",     # 30 February
    "20250101240000",     # hour 24
    "00000101000000",     # year 0
    2025,                 # short int
    -20250101120000,      # negative int
    "",
])
def test_rejects_bad_text_naming_the_parameter(value):
    with pytest.raises(InputError) as info:
        parse_ts(value, name="--time")
    message = str(info.value)
    assert message.startswith("invalid --time ")
    assert "YYYYmmddHHMMSS (UTC)" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [True, None, 2025.5, [20250101120000]])
def test_rejects_other_types(value):
    with pytest.raises(InputError, match=r"^invalid time: expected YYYYmmddHHMMSS \(UTC\), got "):
        parse_ts(value)


def test_message_quotes_the_value_like_the_operator_typed_it():
    with pytest.raises(InputError) as info:
        parse_ts("2025130", name="--time")
    assert str(info.value) == "invalid --time '2025130': expected YYYYmmddHHMMSS (UTC)"


def test_control_characters_stay_escaped_on_one_line():
    with pytest.raises(InputError) as info:
        parse_ts("2025\n0101", name="--time")
    assert "\n" not in str(info.value)
    assert "\\n" in str(info.value)


def test_dmf_error_is_always_one_line():
    assert str(DmfError("ssh failed:\n  connection refused\n")) == "ssh failed: connection refused"
