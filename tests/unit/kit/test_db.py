"""kit.db: the schema-name check behind the hot statements built as text."""

from __future__ import annotations

import pytest

from prost.kit.db import quoted_schema


def test_hot_statements_are_built_only_for_plain_schema_names() -> None:
    assert quoted_schema("orders") == '"orders"'
    for bad in ('orders"; DROP TABLE x; --', "Orders", "1orders", "", "a" * 64):
        with pytest.raises(ValueError, match="not a service schema name"):
            quoted_schema(bad)
