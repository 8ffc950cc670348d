import pytest

from orchestrator.api.intorstr import (
    MAX_INT_OR_STRING,
    IntOrStringError,
    is_int_or_string_valid,
    parse_int_or_percent,
    parse_port,
    resolve_scaled,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        ("0%", 10, True, 0),
        ("0%", 10, False, 0),
        ("100%", 10, True, 10),
        ("100%", 10, False, 10),
        ("50%", 3, True, 2),
        ("50%", 3, False, 1),
        ("10%", 0, True, 0),
        ("1%", 1, True, 1),
        ("1%", 1, False, 0),
        ("150%", 10, False, 15),
        ("33%", 100, True, 33),
    ],
)
def test_percentages_round_as_kubernetes(
    value: str, total: int, round_up: bool, expected: int
) -> None:
    assert resolve_scaled(value, total, round_up, "25%") == expected


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (0, 0), ("0", 0), ("007", 7)])
def test_integers_are_used_as_is(value: str | int, expected: int) -> None:
    assert resolve_scaled(value, 10, True, "25%") == expected
    assert resolve_scaled(value, 10, False, "25%") == expected


def test_none_uses_default() -> None:
    assert resolve_scaled(None, 10, True, "25%") == 3
    assert resolve_scaled(None, 10, False, "25%") == 2
    assert resolve_scaled(None, 10, False, "1") == 1


@pytest.mark.parametrize(
    "value", ["25 %", " 25%", "25%%", "%", "-1", "-5%", "1.5", "2.5%", "", "abc", "+3", "3 "]
)
def test_invalid_strings_are_rejected(value: str) -> None:
    with pytest.raises(IntOrStringError) as info:
        resolve_scaled(value, 10, True, "25%")
    assert f'"{value}"' in str(info.value)
    assert not is_int_or_string_valid(value)


def test_negative_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(IntOrStringError, match="must not be negative"):
        resolve_scaled(-1, 10, True, "25%")
    with pytest.raises(IntOrStringError, match="must not be negative"):
        resolve_scaled("-1", 10, True, "25%")


def test_invalid_default_is_rejected() -> None:
    with pytest.raises(IntOrStringError):
        resolve_scaled(None, 10, True, "lots")


@pytest.mark.parametrize("value", [True, False, 1.5, None, [3]])
def test_wrong_types_are_rejected(value: object) -> None:
    with pytest.raises(IntOrStringError):
        parse_int_or_percent(value)  # type: ignore[arg-type]


def test_int32_bound() -> None:
    assert parse_int_or_percent(MAX_INT_OR_STRING) == (MAX_INT_OR_STRING, False)
    for too_big in (
        MAX_INT_OR_STRING + 1,
        str(MAX_INT_OR_STRING + 1),
        "9" * 5000,
        "9" * 5000 + "%",
    ):
        with pytest.raises(IntOrStringError, match="at most"):
            parse_int_or_percent(too_big)


def test_parse_int_or_percent() -> None:
    assert parse_int_or_percent("25%") == (25, True)
    assert parse_int_or_percent("25") == (25, False)
    assert parse_int_or_percent(25) == (25, False)


@pytest.mark.parametrize("value", [0, 3, "3", "0%", "25%", "100%"])
def test_valid(value: str | int) -> None:
    assert is_int_or_string_valid(value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("80", 80),
        ("1", 1),
        ("65535", 65535),
        (8080, 8080),
        ("http", "http"),
        ("metrics-port", "metrics-port"),
        ("h2c", "h2c"),
        ("a", "a"),
        ("x" * 15, "x" * 15),
        ("9http", "9http"),
    ],
)
def test_parse_port_valid(raw: str | int, expected: int | str) -> None:
    assert parse_port(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0", "must be between 1 and 65535, inclusive"),
        ("65536", "must be between 1 and 65535, inclusive"),
        ("9" * 5000, "must be between 1 and 65535, inclusive"),
        (0, "must be between 1 and 65535, inclusive"),
        (-1, "must be between 1 and 65535, inclusive"),
        ("x" * 16, "must be no more than 15 characters"),
        ("HTTP", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
        ("my_port", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
        ("", "must contain at least one letter (a-z)"),
        ("12-34", "must contain at least one letter (a-z)"),
        ("my--port", "must not contain consecutive hyphens"),
        ("-http", "must not begin or end with a hyphen"),
        ("http-", "must not begin or end with a hyphen"),
        ("-80", "must not begin or end with a hyphen"),
        (True, "not a boolean"),
    ],
)
def test_parse_port_invalid(raw: str | int, reason: str) -> None:
    with pytest.raises(IntOrStringError) as info:
        parse_port(raw)
    message = str(info.value)
    assert message.startswith("invalid port ")
    assert reason in message


def test_parse_port_lists_every_reason() -> None:
    with pytest.raises(IntOrStringError) as info:
        parse_port("-My--Port-Name-Too-Long")
    message = str(info.value)
    assert "no more than 15" in message
    assert "alpha-numeric" in message
    assert "consecutive hyphens" in message
    assert "begin or end with a hyphen" in message
