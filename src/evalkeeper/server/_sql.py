"""The sample explorer's SQL: filters, search, sort and paging built from typed, validated parameters.

Every value a user sends becomes a bound parameter (`?`) and every column or sort key comes from a fixed
list, so no request text reaches SQL verbatim. The SQL runs through `Workspace.sql` over
`Workspace.samples_relation_sql` (DuckDB over the run's Parquet parts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from evalkeeper.core.errors import EvalkeeperError

SORT_KEYS = ("sample_id", "score", "task", "latency_ms", "tokens_in", "tokens_out", "epoch")
MAX_PAGE_SIZE = 500
LIST_TEXT_LIMIT = 300  # characters of input/target/prediction sent per row in listings

# Listing columns: long texts are cut in DuckDB so a page never ships megabytes of prompts.
_N = LIST_TEXT_LIMIT
ROW_COLUMNS = (
    f"task, sample_id, epoch, left(input, {_N}) AS input, left(target, {_N}) AS target, "
    f"left(prediction, {_N}) AS prediction, (length(input) > {_N} OR coalesce(length(target), 0) > {_N} "
    f"OR coalesce(length(prediction), 0) > {_N}) AS truncated, "
    'scores, "group", latency_ms, tokens_in, tokens_out'
)
_LIST_COLUMNS = ROW_COLUMNS + ", score"


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise EvalkeeperError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ExplorerQuery:
    """What the explorer asks for: filters, text search, sort and one page."""

    task: str | None = None
    metric: str | None = None  # None: the task's primary metric (the store's `score` column)
    score_min: float | None = None
    score_max: float | None = None
    group: str | None = None
    group_value: str | None = None
    search: str | None = None
    sort: str = "sample_id"
    order: Literal["asc", "desc"] = "asc"
    page: int = 1
    page_size: int = 50

    def validate(self) -> ExplorerQuery:
        if self.sort not in SORT_KEYS:
            raise EvalkeeperError(
                f"unknown sort key {self.sort!r}", hint=f"use one of {', '.join(SORT_KEYS)}"
            )
        if self.order not in ("asc", "desc"):
            raise EvalkeeperError(f"unknown order {self.order!r}", hint="use asc or desc")
        if self.page < 1:
            raise EvalkeeperError("page must be >= 1")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise EvalkeeperError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if self.group_value is not None and not self.group:
            raise EvalkeeperError("group_value needs group (the attribute name)")
        for name in ("score_min", "score_max"):
            v = getattr(self, name)
            if v is not None:
                _finite(name, v)
        return self

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def _score(self, params: list[Any]) -> str:
        if not self.metric:
            return "score"
        params.append(self.metric)
        return "scores[?]"

    def filter_sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (possibly empty) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.task:
            clauses.append("task = ?")
            params.append(self.task)
        search = (self.search or "").strip()
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append(
                "(input ILIKE ? ESCAPE '\\' OR prediction ILIKE ? ESCAPE '\\' OR target ILIKE ? ESCAPE '\\')"
            )
            params.extend([pattern] * 3)
        if self.score_min is not None:
            clauses.append(f"{self._score(params)} >= ?")
            params.append(float(self.score_min))
        if self.score_max is not None:
            clauses.append(f"{self._score(params)} <= ?")
            params.append(float(self.score_max))
        if self.metric and self.score_min is None and self.score_max is None:
            clauses.append(f"{self._score(params)} IS NOT NULL")
        if self.group:
            params.append(self.group)
            if self.group_value is not None:
                clauses.append('"group"[?] = ?')
                params.append(self.group_value)
            else:
                clauses.append('"group"[?] IS NOT NULL')
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def page_sql(self, relation: str) -> tuple[str, list[Any]]:
        where, params = self.filter_sql()
        direction = "DESC" if self.order == "desc" else "ASC"
        key = self._score(params) if self.sort == "score" else self.sort
        ties = [f"{k} ASC" for k in ("task", "sample_id", "epoch") if k != self.sort]
        order = ", ".join([f"{key} {direction} NULLS LAST", *ties])
        sql = (
            f"SELECT {_LIST_COLUMNS} FROM {relation} AS s{where} ORDER BY {order} "
            f"LIMIT {int(self.page_size)} OFFSET {int(self.offset)}"
        )
        return sql, params

    def count_sql(self, relation: str) -> tuple[str, list[Any]]:
        where, params = self.filter_sql()
        return f"SELECT count(*) AS n FROM {relation} AS s{where}", params
