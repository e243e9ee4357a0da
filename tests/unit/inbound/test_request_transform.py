"""Request transforms: Kong's request-transformer semantics on headers and query strings."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config.errors import ConfigError
from sidecar.config.fields import Fields
from sidecar.inbound.transform import (
    RequestTransform,
    TransformConfig,
    parse_transform,
    read_transform,
)

Headers = list[tuple[bytes, bytes]]


def transform(request: dict[str, Any]) -> RequestTransform:
    return RequestTransform(parse_transform({"request": request}))


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_transform(data)
    return e.value.problems


BASE: Headers = [(b"host", b"app"), (b"accept", b"*/*"), (b"x-team", b"blue")]


def test_seed_adds_service_version() -> None:
    t = transform({"add": {"headers": ["X-Service-Version:v1"]}})
    headers, target = t.apply(BASE, b"/trades?id=7")
    assert headers == [*BASE, (b"x-service-version", b"v1")]
    assert target == b"/trades?id=7"


def test_add_only_when_absent_append_always() -> None:
    t = transform({"add": {"headers": ["x-team:red", "x-new:1"]},
                   "append": {"headers": ["x-team:green"]}})
    headers, _ = t.apply(BASE, b"/")
    assert [v for k, v in headers if k == b"x-team"] == [b"blue", b"green"]
    assert (b"x-new", b"1") in headers


def test_header_names_are_case_insensitive_and_input_is_not_changed() -> None:
    before = list(BASE)
    t = transform({"remove": {"headers": ["X-TEAM"]}, "replace": {"headers": ["Accept: a/b"]}})
    headers, _ = t.apply(BASE, b"/")
    assert headers == [(b"host", b"app"), (b"accept", b"a/b")]
    assert before == BASE


def test_replace_only_when_present_and_collapses_repeats() -> None:
    t = transform({"replace": {"headers": ["x-v:new", "x-absent:1"]}})
    headers, _ = t.apply([(b"x-v", b"a"), (b"y", b"1"), (b"x-v", b"b")], b"/")
    assert headers == [(b"x-v", b"new"), (b"y", b"1")]


def test_rename_moves_every_value_and_overwrites_the_new_name() -> None:
    t = transform({"rename": {"headers": ["x-old:x-new", "x-missing:x-other"]}})
    headers, _ = t.apply([(b"x-new", b"stale"), (b"x-old", b"1"), (b"x-old", b"2")], b"/")
    assert headers == [(b"x-new", b"1"), (b"x-new", b"2")]


def test_order_is_remove_rename_replace_add_append() -> None:
    # Each edit sees the previous one's result: x-a removed then re-added; x-b renamed
    # to x-c, which replace then finds; add skips x-c (present) and append adds to it.
    t = transform({
        "append": {"headers": ["x-c:appended"]},
        "add": {"headers": ["x-a:added", "x-c:never"]},
        "replace": {"headers": ["x-c:replaced"]},
        "rename": {"headers": ["x-b:x-c"]},
        "remove": {"headers": ["x-a"]},
    })
    headers, _ = t.apply([(b"x-a", b"orig"), (b"x-b", b"orig")], b"/")
    assert headers == [(b"x-c", b"replaced"), (b"x-a", b"added"), (b"x-c", b"appended")]


def test_query_edits_keep_untouched_parameters_as_sent() -> None:
    t = transform({"remove": {"querystring": ["debug"]},
                   "rename": {"querystring": ["q:search"]},
                   "replace": {"querystring": ["page:1"]},
                   "add": {"querystring": ["source:mesh app"]},
                   "append": {"querystring": ["tag:a&b"]}})
    _, target = t.apply([], b"/list?q=caf%C3%A9&debug=1&page=9&keep=a%2Fb+c")
    assert target == b"/list?search=caf%C3%A9&page=1&keep=a%2Fb+c&source=mesh%20app&tag=a%26b"


def test_query_names_match_when_percent_encoded() -> None:
    t = transform({"remove": {"querystring": ["a b"]}})
    assert t.apply([], b"/p?a%20b=1&c=2")[1] == b"/p?c=2"
    assert t.apply([], b"/p?a+b=1")[1] == b"/p"


def test_query_added_to_a_target_without_one() -> None:
    t = transform({"add": {"querystring": ["v:2"]}})
    assert t.apply([], b"/p")[1] == b"/p?v=2"


def test_templates_read_the_request_as_it_arrived() -> None:
    t = transform({"remove": {"headers": ["x-team"]},
                   "add": {"headers": ["x-owner:team-$(headers.x-team)",
                                       "x-page:$(query_params[\"page\"])"],
                           "querystring": ["team:$(headers.X-Team)"]}})
    headers, target = t.apply(BASE, b"/p?page=a%20b")
    assert (b"x-owner", b"team-blue") in headers
    assert (b"x-page", b"a b") in headers
    assert not any(k == b"x-team" for k, _ in headers)
    assert target == b"/p?page=a%20b&team=blue"


def test_template_rendering_empty_writes_nothing() -> None:
    t = transform({"add": {"headers": ["x-user:$(headers.x-sub)"]}})
    assert t.apply(BASE, b"/")[0] == BASE


def test_a_query_template_cannot_smuggle_a_header_line() -> None:
    t = transform({"add": {"headers": ["x-page:$(query_params.p)"]}})
    headers, _ = t.apply([], b"/?p=1%0d%0aevil:%20yes")
    assert headers == []


def test_nothing_configured() -> None:
    assert not RequestTransform(TransformConfig())
    assert not parse_transform(None)


def test_mapping_entries_and_read_transform_with_fields() -> None:
    found: list[str] = []
    cfg = read_transform(Fields({"request": {"add": {"headers": [{"X-Service-Version": "v1"}]}}},
                                "routes[0].transform", found))
    assert found == []
    assert cfg.request_headers.add == ((b"x-service-version", b"v1"),)


def test_every_problem_is_reported_with_its_path() -> None:
    found = problems({
        "request": {
            "add": {"headers": ["x-ok:1", "bad name:1", "x-crlf:a\nb", "host:evil", "x-none"],
                    "body": ["a:b"]},
            "rename": {"headers": ["x-a"]},
            "remove": {"querystring": ["p:v"]},
            "http_method": "POST",
            "typo": 1,
        },
        "response": {"add": {"headers": ["x-t:$(headers.a)"]},
                     "remove": {"headers": ["transfer-encoding"]}},
    })
    assert sorted(found) == sorted([
        "transform.request.add.headers[1]: 'bad name' is not a valid header name",
        "transform.request.add.headers[2]: must be printable ASCII "
        "(no CR, LF or other control characters)",
        "transform.request.add.headers[3]: host is managed by the sidecar and cannot be "
        "transformed",
        "transform.request.add.headers[4]: add takes `name:value`",
        "transform.request.add.body: is not supported (the sidecar does not rewrite bodies "
        "or paths)",
        "transform.request.rename.headers[0]: rename takes `old:new` with two names",
        "transform.request.remove.querystring[0]: remove takes names only",
        "transform.request.http_method: is not supported",
        "transform.request.typo: unknown key",
        "transform.response.add.headers[0]: templates are only for request values",
        "transform.response.remove.headers[0]: transfer-encoding is managed by the sidecar "
        "and cannot be transformed",
    ])


def test_unsupported_template_is_refused() -> None:
    assert problems({"request": {"add": {"headers": ["x:$(shared.a)"]}}}) == [
        "transform.request.add.headers[0]: only $(headers.<name>) and $(query_params.<name>) "
        "templates are supported"]


def test_what_forwarding_sends_upstream() -> None:
    from sidecar.protocol.events import RequestHead
    from sidecar.protocol.forwarding import request_head

    head = RequestHead(b"GET", b"/t?debug=1&id=7", "1.1",
                       [(b"host", b"trading"), (b"x-debug", b"1")], True)
    t = transform({"remove": {"headers": ["x-debug"], "querystring": ["debug"]},
                   "add": {"headers": ["X-Service-Version:v1"]}})
    head.headers, head.target = t.apply(head.headers, head.target)
    sent = request_head(head, client_ip=b"10.0.0.1", proto=b"http", request_id=b"r1")
    assert sent.startswith(b"GET /t?id=7 HTTP/1.1\r\nhost: trading\r\nx-service-version: v1\r\n")
    assert b"x-debug" not in sent
