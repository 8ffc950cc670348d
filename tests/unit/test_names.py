import pytest

from orchestrator.api import names

pytestmark = pytest.mark.unit

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


@pytest.mark.parametrize("name", ["a", "my-name", "123-abc", "0", "a" * 63, "a-b-c"])
def test_dns1123_label_valid(name: str) -> None:
    assert names.dns1123_label(name) == []


@pytest.mark.parametrize(
    "name", ["", "My-Name", "-a", "a-", "a.b", "a_b", "a b", "ä", "a\n", "a" * 64]
)
def test_dns1123_label_invalid(name: str) -> None:
    assert names.dns1123_label(name) != []


def test_dns1123_label_messages_are_kubernetes() -> None:
    assert names.dns1123_label("My-Name") == [LABEL_MSG]
    assert names.dns1123_label("a" * 64) == ["must be no more than 63 characters"]
    assert names.dns1123_label("A" * 64) == ["must be no more than 63 characters", LABEL_MSG]


@pytest.mark.parametrize(
    "name", ["a", "example.com", "my-app.v1", "a" * 253, "a." * 126 + "a", "1.2.3.4"]
)
def test_dns1123_subdomain_valid(name: str) -> None:
    assert names.dns1123_subdomain(name) == []


@pytest.mark.parametrize(
    "name", ["", ".a", "a.", "a..b", "a.-b", "a-.b", "Example.com", "a_b", "a" * 254, "a/b"]
)
def test_dns1123_subdomain_invalid(name: str) -> None:
    assert names.dns1123_subdomain(name) != []


def test_dns1123_subdomain_message() -> None:
    (message,) = names.dns1123_subdomain("Example.com")
    assert message.startswith("a lowercase RFC 1123 subdomain must consist of lower case")
    assert "(e.g. 'example.com', regex used for validation is" in message
    assert names.dns1123_subdomain("a" * 254)[0] == "must be no more than 253 characters"


@pytest.mark.parametrize(
    "key",
    [
        "app",
        "App_Name",
        "my.name",
        "123-abc",
        "a",
        "example.com/MyName",
        "kubernetes.io/hostname",
        "app.kubernetes.io/name",
        "a" * 63,
        "example.com/" + "a" * 63,
    ],
)
def test_qualified_name_valid(key: str) -> None:
    assert names.qualified_name(key) == []


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "name part must be non-empty"),
        ("-app", "name part must consist of alphanumeric characters"),
        ("app_", "name part must consist of alphanumeric characters"),
        ("a b", "name part must consist of alphanumeric characters"),
        ("a" * 64, "name part must be no more than 63 characters"),
        ("/name", "prefix part must be non-empty"),
        ("example.com/", "name part must be non-empty"),
        ("Example.com/name", "prefix part a lowercase RFC 1123 subdomain"),
        ("a/b/c", "a qualified name must consist of alphanumeric characters"),
    ],
)
def test_qualified_name_invalid(key: str, fragment: str) -> None:
    problems = names.qualified_name(key)
    assert any(fragment in p for p in problems), problems


def test_qualified_name_too_many_slashes_message() -> None:
    (message,) = names.qualified_name("a/b/c")
    assert message.endswith(
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    )


@pytest.mark.parametrize("v", ["", "a", "MyValue", "my_value", "12345", "v1.2-3", "a" * 63])
def test_label_value_valid(v: str) -> None:
    assert names.label_value(v) == []


@pytest.mark.parametrize("v", ["-a", "a-", "_a", "a b", "a/b", "a" * 64, "ä"])
def test_label_value_invalid(v: str) -> None:
    assert names.label_value(v) != []


def test_label_value_message() -> None:
    (message,) = names.label_value("-a")
    assert message.startswith("a valid label must be an empty string or consist of")
    assert "(e.g. 'MyValue',  or 'my_value',  or '12345', regex" in message
    assert names.label_value("a" * 64) == ["must be no more than 63 characters"]


@pytest.mark.parametrize("s", ["a", "_", "MY_NAME", "my_name", "MyName1", "_1"])
def test_c_identifier_valid(s: str) -> None:
    assert names.c_identifier(s) == []


@pytest.mark.parametrize("s", ["", "1a", "a-b", "a.b", "a b", "ä"])
def test_c_identifier_invalid(s: str) -> None:
    (message,) = names.c_identifier(s)
    assert message.startswith("a valid C identifier must start with alphabetic character")


@pytest.mark.parametrize(
    "s", ["PATH", "my.env-name", "MY_ENV.NAME", "MyEnvName1", "-x", ".x", "_", "a..b"]
)
def test_env_var_name_valid(s: str) -> None:
    assert names.env_var_name(s) == []


@pytest.mark.parametrize(
    ("s", "fragment"),
    [
        ("", "a valid environment variable name must consist of"),
        ("1ABC", "must not start with a digit"),
        ("A=B", "a valid environment variable name"),
        ("A B", "a valid environment variable name"),
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("..a", "must not start with '..'"),
    ],
)
def test_env_var_name_invalid(s: str, fragment: str) -> None:
    problems = names.env_var_name(s)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    "s", ["key.name", "KEY_NAME", "key-name", "a", "1", ".hidden", "a" * 253, "a..b"]
)
def test_config_map_key_valid(s: str) -> None:
    assert names.config_map_key(s) == []


@pytest.mark.parametrize(
    ("s", "fragment"),
    [
        ("", "a valid config key must consist of alphanumeric characters"),
        ("a/b", "a valid config key"),
        ("a b", "a valid config key"),
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("..data", "must not start with '..'"),
        ("a" * 254, "must be no more than 253 characters"),
    ],
)
def test_config_map_key_invalid(s: str, fragment: str) -> None:
    problems = names.config_map_key(s)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize("s", ["http", "h2c", "metrics-port", "a1", "x" * 15])
def test_port_name_valid(s: str) -> None:
    assert names.port_name(s) == []


@pytest.mark.parametrize("s", ["", "80", "HTTP", "a_b", "a--b", "-a", "a-", "x" * 16])
def test_port_name_invalid(s: str) -> None:
    assert names.port_name(s) != []
