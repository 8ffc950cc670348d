import pytest

from orchestrator.api.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Requirement,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
    selector_from_dict,
    selector_from_match,
)

pytestmark = pytest.mark.unit

POD_FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")


def reqs(s: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(r.key, r.op, r.values) for r in parse_label_selector(s).requirements]


# --- label selector parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=b", [("a", "=", ("b",))]),
        ("a==b", [("a", "=", ("b",))]),
        ("a!=b", [("a", "!=", ("b",))]),
        ("a in (x,y)", [("a", "in", ("x", "y"))]),
        ("a notin (x, y)", [("a", "notin", ("x", "y"))]),
        ("a", [("a", "exists", ())]),
        ("!a", [("a", "!exists", ())]),
        ("example.com/tier=web", [("example.com/tier", "=", ("web",))]),
    ],
)
def test_each_operator(text: str, expected: list[tuple[str, str, tuple[str, ...]]]) -> None:
    assert reqs(text) == expected


def test_conjunction_sorted_by_key() -> None:
    assert reqs("tier=web,app in (a,b),!legacy,canary") == [
        ("app", "in", ("a", "b")),
        ("canary", "exists", ()),
        ("legacy", "!exists", ()),
        ("tier", "=", ("web",)),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "  a = b ,  c  in  ( x ,  y )  ,  ! d  ",
        "a=b,c in (x,y),!d",
        "a==b,\tc in(x,y),\n!d",
        "!d,c in (y,x,x),a=b",
    ],
)
def test_whitespace_tolerated(text: str) -> None:
    assert str(parse_label_selector(text)) == "a=b,c in (x,y),!d"
    assert parse_label_selector(text) == parse_label_selector("a=b,c in (x,y),!d")


def test_in_with_spaces_between_values() -> None:
    assert reqs("env in ( prod , dev )") == [("env", "in", ("dev", "prod"))]
    assert reqs("env in(prod)") == [("env", "in", ("prod",))]


def test_empty_values() -> None:
    assert reqs("a=") == [("a", "=", ("",))]
    assert reqs("a!=") == [("a", "!=", ("",))]
    assert reqs("a=,b") == [("a", "=", ("",)), ("b", "exists", ())]
    assert reqs("a in ()") == [("a", "in", ("",))]
    assert reqs("a in (x,)") == [("a", "in", ("", "x"))]
    assert reqs("a in (x,,y)") == [("a", "in", ("", "x", "y"))]
    assert reqs("a in (,x)") == [("a", "in", ("", "x"))]


def test_keywords_are_plain_words_as_keys_and_values() -> None:
    assert reqs("in=notin") == [("in", "=", ("notin",))]
    assert reqs("notin in (in)") == [("notin", "in", ("in",))]


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_selector_matches_everything(text: str) -> None:
    selector = parse_label_selector(text)
    assert selector.is_empty
    assert selector == LabelSelector.empty
    assert selector.matches({})
    assert selector.matches({"a": "b"})
    assert str(selector) == ""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a in (x", "found 'end of string', expected: ',' or ')'"),
        ("a in (x,y", "found 'end of string', expected: ',' or ')'"),
        ("a in (x,=)", "found '=', expected: ',', or identifier"),
        ("a in x)", "found 'x', expected: '('"),
        ("a in (x))", "found ')', expected: ',' or 'end of string'"),
        ("a in ((x))", "found '(', expected: ',', ')' or identifier"),
        ("a in", "found 'end of string', expected: '('"),
        ("a in (x y)", "found 'y', expected: ',' or ')'"),
        ("a notin (x=y)", "found '=', expected: ',' or ')'"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
        (",", "found ',', expected: !, identifier, or 'end of string'"),
        ("a,", "found 'end of string', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        ("a b", "found 'b', expected: '=', '!=', '==', 'in', 'notin'"),
        ("a (x)", "found '(', expected: '=', '!=', '==', 'in', 'notin'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a===b", "found '=', expected: identifier"),
        ("a=(b)", "found '(', expected: identifier"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("!!a", "found '!', expected: identifier"),
        ("!", "found 'end of string', expected: identifier"),
        ("a>1", "operator '>' is not supported"),
        ("a<1", "operator '<' is not supported"),
    ],
)
def test_syntax_errors(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    message = str(info.value)
    assert message.startswith(f'invalid label selector "{text}": ')
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-a=b", 'invalid label key "-a"'),
        ("a_=b", 'invalid label key "a_"'),
        ("Example.com/a=b", 'invalid label key "Example.com/a": prefix part'),
        ("a/b/c", 'invalid label key "a/b/c"'),
        ("/a", "prefix part must be non-empty"),
        ("x" * 64, "name part must be no more than 63 characters"),
        ("a=-b", 'invalid label value "-b" for key "a"'),
        ("a in (ok, bad_)", 'invalid label value "bad_" for key "a"'),
        ("a notin (x" + "y" * 63 + ")", "must be no more than 63 characters"),
        ("a!=$", 'invalid label value "$" for key "a"'),
        ("ä", 'invalid label key "ä"'),
    ],
)
def test_invalid_keys_and_values(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert fragment in str(info.value)


def test_key_is_checked_before_the_rest_of_the_requirement() -> None:
    with pytest.raises(SelectorError, match='invalid label key "-a"'):
        parse_label_selector("-a in (x")


def test_selector_error_is_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


# --- label selector matching ------------------------------------------------------------------

LABELS = {"app": "web", "tier": "frontend", "empty": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("missing=x", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("missing in (x)", False),
        ("app notin (db)", True),
        ("app notin (web,db)", False),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("empty=", True),
        ("empty", True),
        ("missing=", False),
        ("app=web,tier=frontend", True),
        ("app=web,tier=backend", False),
        ("app,!missing,tier in (frontend)", True),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is expected


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a==b", "a=b"),
        ("a = b", "a=b"),
        ("a!=b", "a!=b"),
        ("a in (y, x, x)", "a in (x,y)"),
        ("a notin(x)", "a notin (x)"),
        ("a", "a"),
        ("! a", "!a"),
        ("a=", "a="),
        ("a in ()", "a in ()"),
        ("z=1,a=2", "a=2,z=1"),
        ("b,a=1,!c,d notin (x)", "a=1,b,!c,d notin (x)"),
    ],
)
def test_str_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(str(selector)) == selector


# --- Requirement construction -----------------------------------------------------------------


def test_requirement_normalises_values() -> None:
    r = Requirement("a", "in", ["y", "x", "y"])  # type: ignore[arg-type]
    assert r.values == ("x", "y")
    assert hash(r) == hash(Requirement("a", "in", ("x", "y")))


@pytest.mark.parametrize(
    ("key", "op", "values", "fragment"),
    [
        ("a", "in", (), "values set can't be empty"),
        ("a", "notin", (), "values set can't be empty"),
        ("a", "=", (), "exact-match compatibility requires one single value"),
        ("a", "!=", ("x", "y"), "exact-match compatibility requires one single value"),
        ("a", "exists", ("x",), "values set must be empty"),
        ("a", "!exists", ("x",), "values set must be empty"),
        ("a", "==", ("x",), 'unsupported operator "=="'),
        ("a", "gt", ("1",), 'unsupported operator "gt"'),
        ("-a", "exists", (), 'invalid label key "-a"'),
        ("a", "in", "xy", "must be a list, not a string"),
        ("a", "in", (1,), "must be a string"),
    ],
)
def test_requirement_validation(key: str, op: str, values: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        Requirement(key, op, values)
    assert fragment in str(info.value)


# --- metav1.LabelSelector -----------------------------------------------------------------------


def test_selector_from_match_labels_and_expressions() -> None:
    selector = selector_from_match(
        {"app": "web"},
        [
            ("tier", "In", ["frontend", "edge"]),
            ("env", "NotIn", ["dev"]),
            ("release", "Exists", []),
            ("legacy", "DoesNotExist", ()),
        ],
    )
    assert str(selector) == "app=web,env notin (dev),!legacy,release,tier in (edge,frontend)"
    assert selector.matches({"app": "web", "tier": "edge", "release": "1"})
    assert not selector.matches({"app": "web", "tier": "edge", "release": "1", "legacy": "y"})
    assert not selector.matches({"app": "web", "tier": "edge", "release": "1", "env": "dev"})
    assert not selector.matches({"app": "web", "tier": "edge"})
    assert selector == parse_label_selector(str(selector))


def test_selector_from_match_accepts_json_expressions() -> None:
    selector = selector_from_match(
        {}, [{"key": "tier", "operator": "In", "values": ["a"]}, {"key": "x", "operator": "Exists"}]
    )
    assert str(selector) == "tier in (a),x"


def test_empty_match_selects_everything() -> None:
    selector = selector_from_match({}, [])
    assert selector.is_empty
    assert selector.matches({})
    assert selector.matches({"any": "thing"})


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        (("a", "In", []), "values set can't be empty"),
        (("a", "NotIn", []), "values set can't be empty"),
        (("a", "Exists", ["x"]), "values set must be empty"),
        (("a", "DoesNotExist", ["x"]), "values set must be empty"),
        (("a", "in", ["x"]), '"in" is not a valid label selector operator'),
        (("a", "Equals", ["x"]), '"Equals" is not a valid label selector operator'),
        (("a b", "Exists", []), 'invalid label key "a b"'),
        (("a", "In", ["-x"]), 'invalid label value "-x"'),
        (("a", "In", "x"), "must be a list, not a string"),
    ],
)
def test_selector_from_match_errors(expression: tuple[str, str, list[str]], fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        selector_from_match({}, [expression])
    assert fragment in str(info.value)


def test_selector_from_match_rejects_bad_match_labels() -> None:
    with pytest.raises(SelectorError, match='invalid label value "bad value"'):
        selector_from_match({"app": "bad value"}, [])
    with pytest.raises(SelectorError, match="must be a string"):
        selector_from_match({"version": 1}, [])  # type: ignore[dict-item]


def test_selector_from_dict() -> None:
    selector = selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }
    )
    assert str(selector) == "app=web,tier notin (db)"
    assert selector_from_dict({}).is_empty


# --- field selectors ----------------------------------------------------------------------------


def test_field_selector_operators() -> None:
    selector = parse_field_selector(
        "spec.nodeName=node-1,status.phase!=Succeeded,metadata.name==web", POD_FIELDS
    )
    assert selector.requirements == (
        FieldRequirement("spec.nodeName", "=", "node-1"),
        FieldRequirement("status.phase", "!=", "Succeeded"),
        FieldRequirement("metadata.name", "=", "web"),
    )
    assert str(selector) == "spec.nodeName=node-1,status.phase!=Succeeded,metadata.name=web"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"spec.nodeName": "node-1", "status.phase": "Running"}, True),
        ({"spec.nodeName": "node-2", "status.phase": "Running"}, False),
        ({"spec.nodeName": "node-1", "status.phase": "Succeeded"}, False),
        ({"spec.nodeName": "node-1"}, True),  # a missing field is "" and "" != Succeeded
        ({}, False),
    ],
)
def test_field_selector_matches(fields: dict[str, str], expected: bool) -> None:
    selector = parse_field_selector("spec.nodeName=node-1,status.phase!=Succeeded", POD_FIELDS)
    assert selector.matches(fields) is expected


def test_field_selector_missing_field_is_empty_string() -> None:
    assert parse_field_selector("spec.nodeName=", POD_FIELDS).matches({})
    assert not parse_field_selector("spec.nodeName!=", POD_FIELDS).matches({})


def test_field_selector_exact() -> None:
    selector = parse_field_selector("status.phase!=Failed, spec.nodeName = node-1", POD_FIELDS)
    assert selector.exact("spec.nodeName") == "node-1"
    assert selector.exact("status.phase") is None
    assert selector.exact("metadata.name") is None
    assert parse_field_selector("spec.nodeName==", POD_FIELDS).exact("spec.nodeName") == ""


@pytest.mark.parametrize("text", ["", "  ", ",", " , "])
def test_empty_field_selector(text: str) -> None:
    selector = parse_field_selector(text, POD_FIELDS)
    assert selector.is_empty
    assert selector == FieldSelector.empty
    assert selector.matches({})
    assert selector.exact("spec.nodeName") is None


def test_unknown_field_names_the_field_and_lists_allowed() -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector("spec.nodeName=a,spec.host=b", POD_FIELDS)
    message = str(info.value)
    assert '"spec.host"' in message
    assert "metadata.name, metadata.namespace, spec.nodeName, status.phase" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spec.nodeName", "has no operator"),
        ("spec.nodeName=a,status.phase", "term 'status.phase' has no operator"),
        ("=node-1", 'field "" is not supported'),
        ("spec.nodeName=a=b", "unescaped '=' in value 'a=b'"),
        ("spec.nodeName=a\\b", "invalid escape sequence '\\b'"),
        ("spec.nodeName=a\\", "invalid escape sequence '\\'"),
    ],
)
def test_field_selector_errors(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text, POD_FIELDS)
    message = str(info.value)
    assert message.startswith(f'invalid field selector "{text}": ')
    assert fragment in message


def test_field_selector_escapes_round_trip() -> None:
    selector = parse_field_selector("metadata.name=a\\,b\\=c\\\\d", POD_FIELDS)
    assert selector.exact("metadata.name") == "a,b=c\\d"
    assert str(selector) == "metadata.name=a\\,b\\=c\\\\d"
    assert parse_field_selector(str(selector), POD_FIELDS) == selector
