"""DRF's side of the one request parser (``core.http.body``)."""

from __future__ import annotations

from typing import Any

from rest_framework.parsers import BaseParser

from core.http.body import parse_json


class JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return parse_json(stream.read() if stream is not None else b"")
