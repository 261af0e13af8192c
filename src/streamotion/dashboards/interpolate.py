"""Grafana's variable and macro expansion, for running the exact panel queries outside Grafana.

Follows Grafana's rules for the PostgreSQL data source: a multi-value or include-all variable
becomes a comma-separated list of single-quoted strings; a single-value variable is inserted as
is; ``${var:raw}``, ``${var:singlequote}``, ``${var:sqlstring}``, ``${var:regex}`` and
``${var:pipe}`` format explicitly. Macros: ``$__timeFilter(col)``, ``$__timeFrom()``,
``$__timeTo()``, ``$__timeGroup(col, interval)``, ``$__timeGroupAlias(col, interval)``,
``$__interval``, ``$__rate_interval``, ``$__range``; the BigQuery data source's forms in
:func:`bigquery_macros`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

Value = str | Sequence[str]

_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _format(name: str, value: Value, fmt: str | None, multi_default: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    multi = not isinstance(value, str)
    fmt = fmt or (multi_default if multi else "raw")
    if fmt == "raw":
        return ",".join(values)
    if fmt in ("singlequote", "sqlstring"):
        return ",".join(_quote(v) for v in values)
    if fmt == "regex":
        escaped = [re.escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "csv":
        return ",".join(values)
    raise ValueError(f"variable {name}: unsupported format {fmt!r}")


def variables(text: str, values: Mapping[str, Value], multi_default: str = "singlequote") -> str:
    """Replace ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``; macros (``$__...``) stay."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        if name.startswith("__"):
            return m.group(0)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no value (query: {text[:80]!r}...)")
        return _format(name, values[name], m.group(2), multi_default)

    return _VAR.sub(sub, text)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def _seconds(interval: str) -> float:
    """Grafana interval (500ms, 15s, 1m, 1h, 1d, 1h30m) in seconds."""
    text = interval.strip().strip("'\"")
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Grafana interval: {interval!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _args(text: str, start: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the macro call whose '(' is at ``start``; returns (args, end)."""
    depth, i, parts, cur = 0, start, [], []
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                parts.append("".join(cur).strip())
                return [p for p in parts if p], i + 1
            cur.append(c)
        elif c == "," and depth == 1:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise ValueError(f"unbalanced macro call in {text[start - 20 : start + 40]!r}")


def _expand_macros(sql: str, interval: str, names: str, expand: Callable[[str, list[str]], str]) -> str:
    """Replace ``$__interval(_ms)`` and every ``$__name(args)`` of ``names`` (a regex alternation)
    by ``expand(name, args)``: the scanning both data sources share."""
    sql = sql.replace("$__interval_ms", str(int(_seconds(interval) * 1000))).replace("$__interval", interval)
    out: list[str] = []
    i = 0
    pattern = re.compile(rf"\$__({names})\s*\(")
    while True:
        m = pattern.search(sql, i)
        if not m:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i : m.start()])
        args, i = _args(sql, m.end() - 1)
        out.append(expand(m.group(1), args))


def postgres_macros(sql: str, time_from: datetime, time_to: datetime, interval: str = "1m") -> str:
    """Expand Grafana's PostgreSQL macros the way its data source does."""

    def expand(name: str, args: list[str]) -> str:
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{_iso(time_from)}' AND '{_iso(time_to)}'"
        if name == "timeFrom":
            return f"'{_iso(time_from)}'"
        if name == "timeTo":
            return f"'{_iso(time_to)}'"
        seconds = _seconds(args[1])
        step = int(seconds) if seconds == int(seconds) else seconds
        expr = f"floor(extract(epoch from {args[0]})/{step})*{step}"
        return f'{expr} AS "time"' if name == "timeGroupAlias" else expr

    return _expand_macros(sql, interval, "timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup", expand)


def bigquery_macros(sql: str, time_from: datetime, time_to: datetime, interval: str = "1m") -> str:
    """Expand the macros as Grafana's BigQuery data source does (grafana/sqlds defaults, its own
    ``$__timeGroup``): ``$__timeFilter(col)`` -> ``col >= 'from' AND col <= 'to'``,
    ``$__timeGroup(col, 5m)`` -> ``TIMESTAMP_MILLIS(DIV(UNIX_MILLIS(col), 300000) * 300000)``."""

    def expand(name: str, args: list[str]) -> str:
        if name == "timeFilter":
            return f"{args[0]} >= '{_iso(time_from)}' AND {args[0]} <= '{_iso(time_to)}'"
        if name == "timeFrom":
            return f"{args[0]} >= '{_iso(time_from)}'"
        if name == "timeTo":
            return f"{args[0]} <= '{_iso(time_to)}'"
        ms = int(_seconds(args[1]) * 1000)
        return f"TIMESTAMP_MILLIS(DIV(UNIX_MILLIS({args[0]}), {ms}) * {ms})"

    return _expand_macros(sql, interval, "timeFilter|timeFrom|timeTo|timeGroup", expand)


def bigquery(
    sql: str,
    values: Mapping[str, Value],
    time_from: datetime,
    time_to: datetime,
    interval: str = "1m",
) -> str:
    """A dashboard's BigQuery query, ready to run (variables as for SQL data sources, then macros)."""
    return bigquery_macros(variables(sql, values), time_from, time_to, interval)


def postgres(
    sql: str,
    values: Mapping[str, Value],
    time_from: datetime,
    time_to: datetime,
    interval: str = "1m",
) -> str:
    """A dashboard's PostgreSQL query, ready to run: variables first, then macros (as Grafana)."""
    return postgres_macros(variables(sql, values), time_from, time_to, interval)


def promql(
    expr: str,
    values: Mapping[str, Value],
    interval: str = "15s",
    rate_interval: str = "1m",
    range_: str = "1h",
) -> str:
    """A dashboard's PromQL, ready for /api/v1/query (multi-value variables as regex alternations)."""
    expr = (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", interval)
        .replace("$__range", range_)
    )
    return variables(expr, values, multi_default="regex")
