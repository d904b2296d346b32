def assert_error(
    response,
    status: int,
    code: str,
    *,
    error_type: str | None = None,
    attr: str | None = None,
    extra_keys: frozenset = frozenset(),
) -> dict:
    """The response is an error of the one shape: {type, code, message, errors: [{code, detail, attr}]}."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "code", "message", "errors"} | extra_keys
    expected_type = error_type or _error_type(status, code)
    assert body["type"] == expected_type
    assert body["code"] == code
    assert body["errors"], "errors must not be empty"
    for error in body["errors"]:
        assert set(error) == {"code", "detail", "attr"}
        assert isinstance(error["detail"], str) and error["detail"]
    first = body["errors"][0]
    assert first["code"] == code
    assert first["attr"] == attr
    assert body["message"] == (f"{attr}: {first['detail']}" if attr else first["detail"])
    return body


def _error_type(status: int, code: str) -> str:
    # drf-standardized-errors: a 400 is a validation error, except a body that did not parse.
    if status >= 500:
        return "server_error"
    return "validation_error" if status == 400 and code != "parse_error" else "client_error"
