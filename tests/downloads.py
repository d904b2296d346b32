"""Reading downloads, which stream."""

import json


def content(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def as_json(response):
    return json.loads(content(response))
