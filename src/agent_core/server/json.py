"""JSON responses encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["JSONResponse"]


class JSONResponse(_StarletteJSONResponse):
    """A ``JSONResponse`` (so OpenAPI describes its model) whose body orjson encodes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
