from fractions import Fraction

import pytest

from orchestrator.api.quantity import (
    QuantityError,
    cpu_millis,
    format_bytes,
    format_cpu_millis,
    format_quantity,
    memory_bytes,
    milli_value,
    parse_quantity,
    value,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Ki", 1024),
        ("1Mi", 1024**2),
        ("1Gi", 1024**3),
        ("1Ti", 1024**4),
        ("1Pi", 1024**5),
        ("1Ei", 1024**6),
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("1m", Fraction(1, 1000)),
        ("1", 1),
        ("1k", 1000),
        ("1M", 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
    ],
)
def test_every_suffix(text: str, expected: Fraction | int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", Fraction(1, 2)),
        ("0.1", Fraction(1, 10)),
        (".5", Fraction(1, 2)),
        ("1.", 1),
        ("1.5Gi", 3 * 512 * 1024**2),
        ("500m", Fraction(1, 2)),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e-3", Fraction(1, 1000)),
        ("1E+2", 100),
        ("2.5e2", 250),
        ("+1", 1),
        ("-1", -1),
        ("-0.5Ki", -512),
        ("0", 0),
        ("007", 7),
    ],
)
def test_numbers_signs_and_exponents(text: str, expected: Fraction | int) -> None:
    assert parse_quantity(text) == expected


def test_parse_is_exact() -> None:
    assert parse_quantity("0.1") + parse_quantity("0.2") == parse_quantity("0.3")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(2, 2), (0, 0), (0.5, Fraction(1, 2)), (0.1, Fraction(1, 10)), (1e3, 1000)],
)
def test_numbers_from_yaml(raw: int | float, expected: Fraction | int) -> None:
    assert parse_quantity(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "12XYZ",
        "Mi",
        "m",
        ".",
        "-",
        "+",
        " 1",
        "1 ",
        "1 Gi",
        "1\n",
        "1mi",
        "1KI",
        "1K",
        "1e",
        "1e1.5",
        "1Gi3",
        "--1",
        "1,000",
        "\u0661",  # ARABIC-INDIC DIGIT ONE, which Python's \d would accept
        "0x10",
    ],
)
def test_invalid_strings(text: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    message = str(info.value)
    assert f'quantity "{text}" is invalid' in message
    assert "expected a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...)" in message


def test_error_message_matches_documented_form() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("12XYZ")
    assert str(info.value) == (
        'quantity "12XYZ" is invalid: expected a number with an optional suffix '
        "(m, k, M, G, Ki, Mi, Gi, ...)"
    )


def test_quantity_error_is_value_error() -> None:
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize("raw", [True, float("nan"), float("inf"), None, [1]])
def test_invalid_non_strings(raw: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1e65", "1e-65", "1" * 65, "0." + "0" * 70 + "1"])
def test_absurd_sizes_are_rejected_not_computed(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("1", 1000),
        ("2", 2000),
        ("0.5", 500),
        ("0.1", 100),
        ("1.5", 1500),
        ("100u", 1),  # 0.1m rounds up to 1m
        ("1n", 1),
        ("1001u", 2),
        ("0", 0),
        ("-1.5m", -2),  # away from zero, as Kubernetes
        ("1k", 1_000_000),
    ],
)
def test_milli_value_rounds_up(text: str, millis: int) -> None:
    assert milli_value(text) == millis
    assert milli_value(parse_quantity(text)) == millis
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1Gi", 1073741824),
        ("128Mi", 134217728),
        ("1G", 10**9),
        ("1.5", 2),
        ("1m", 1),
        ("999m", 1),
        ("1001m", 2),
        ("0", 0),
        ("-1.5", -2),
        ("1e3", 1000),
    ],
)
def test_value_rounds_up(text: str, units: int) -> None:
    assert value(text) == units
    assert memory_bytes(text) == units


def test_convenience_accepts_numbers() -> None:
    assert cpu_millis(1) == 1000
    assert cpu_millis(0.25) == 250
    assert memory_bytes(1024) == 1024


@pytest.mark.parametrize(
    ("millis", "text"),
    [(500, "500m"), (2000, "2"), (1500, "1500m"), (0, "0"), (1, "1m"), (-250, "-250m")],
)
def test_format_cpu_millis(millis: int, text: str) -> None:
    assert format_cpu_millis(millis) == text
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (134217728, "128Mi"),
        (1024, "1Ki"),
        (1024**3, "1Gi"),
        (1024**6 * 3, "3Ei"),
        (1536, "1536"),
        (1000, "1000"),
        (1, "1"),
        (0, "0"),
        (3 * 512 * 1024**2, "1536Mi"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
    assert memory_bytes(text) == n


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("1500m", "1500m"),
        ("1.5", "1500m"),
        ("2000m", "2"),
        ("1000", "1k"),
        ("1e3", "1k"),
        ("0.1m", "100u"),
        ("0", "0"),
        ("1Ki", "1024"),
        ("1E", "1E"),
        ("5E", "5E"),
        ("1000E", "1000E"),
    ],
)
def test_format_quantity_decimal(raw: str, text: str) -> None:
    assert format_quantity(raw) == text
    assert parse_quantity(text) == parse_quantity(raw)


@pytest.mark.parametrize(
    ("raw", "text"),
    [("1Gi", "1Gi"), ("1.5Gi", "1536Mi"), ("1536", "1536"), ("100m", "100m"), ("1000", "1k")],
)
def test_format_quantity_binary(raw: str, text: str) -> None:
    assert format_quantity(raw, binary=True) == text


def test_format_quantity_rounds_below_a_nano_up() -> None:
    assert format_quantity(Fraction(1, 10**10)) == "1n"
