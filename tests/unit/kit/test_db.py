"""kit.db: hot statements built as text (`Sql`) and the schema-name check behind them."""

from __future__ import annotations

import pytest

from prost.kit.db import Sql, quoted_schema


def test_hot_statements_are_built_only_for_plain_schema_names() -> None:
    assert quoted_schema("orders") == '"orders"'
    for bad in ('orders"; DROP TABLE x; --', "Orders", "1orders", "", "a" * 64):
        with pytest.raises(ValueError, match="not a service schema name"):
            quoted_schema(bad)


def test_sql_numbers_each_name_once_and_leaves_casts_alone() -> None:
    sql = Sql("SELECT :a::text, CAST(:b AS int[]), :a WHERE x = ANY(:b) AND t = '10:30'")
    assert sql.text == "SELECT $1::text, CAST($2 AS int[]), $1 WHERE x = ANY($2) AND t = '10:30'"
    assert sql.names == ("a", "b")
    assert sql.args({"b": [1], "a": "x"}) == ["x", [1]]


def test_sql_refuses_parameters_that_do_not_fit() -> None:
    sql = Sql("SELECT :a, :b")
    with pytest.raises(TypeError, match=r"missing \['b'\], unknown \[\]"):
        sql.args({"a": 1})
    with pytest.raises(TypeError, match=r"missing \[\], unknown \['c'\]"):
        sql.args({"a": 1, "b": 2, "c": 3})
    with pytest.raises(TypeError, match=r"missing \['b'\], unknown \['c'\]"):
        sql.args({"a": 1, "c": 3})
