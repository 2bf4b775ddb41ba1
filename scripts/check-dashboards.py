#!/usr/bin/env python3
"""Checks that the chart's dashboards and alerts use only metrics the services really expose.

Reads every Grafana dashboard (deploy/dashboards/*.json: panels' targets, nested rows, and the
template variables' queries) and the alert rules (deploy/rules/*.rules.yaml: every `expr`),
extracts the metric names of their PromQL expressions, and looks each up in a metrics dump: a
file in the Prometheus or OpenMetrics text format, normally metrics_aggregator's merged
exposition from a real run of all six services (PLATFORM_METRICS_DUMP, or --dump).

A name is known when it is a `# TYPE` family name or a sample name of the dump, or a sample name
its family implies: `foo_total` and `foo_created` for a counter `foo`, `foo_bucket`, `foo_sum` and
`foo_count` for a histogram, `foo_sum` and `foo_count` for a summary, `foo_info` for an info. Names
that recording rules define are known too. Every unknown name is printed with its file and
expression, and the exit status is 1; invalid JSON or YAML also exits 1.

    scripts/check-dashboards.py [--dump FILE] [--parse-only] [FILE...]

--parse-only reads and extracts without a dump (no names are checked).
"""

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_FILES = ("deploy/dashboards/*.json", "deploy/rules/*.rules.yaml")

# Words of PromQL that are not metric names where a name could stand (functions and aggregation
# operators are recognised by the parenthesis that follows them).
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
}
# Modifiers whose parenthesised list holds label names, not expressions.
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_MATCHER = re.compile(r'\b__name__\s*=\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
# Grafana's variables: $__rate_interval, $service, ${service}, ${service:regex}, [[service]].
GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
TOKEN = re.compile(
    r"(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)"
    r"|(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<other>\S)"
)


class CheckError(Exception):
    """A file the check cannot read: the message says which and why."""


def metric_names(expr):
    """Returns the metric names an expression selects, in order of first use."""
    # {__name__="foo"} names a metric too (a regular expression, =~, cannot be checked).
    names = [m.group(1)[1:-1].replace('\\"', '"') for m in NAME_MATCHER.finditer(expr)]
    text = STRING.sub('""', expr)
    text = GRAFANA_VARIABLE.sub(" ", text)
    # Label matchers, then ranges and subqueries ([5m], [15m:1m]), then label lists of by(...).
    previous = None
    while previous != text:
        previous, text = text, re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = LABEL_LISTS.sub(r" \1 ", text)
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(text)]
    for index, (kind, value) in enumerate(tokens):
        if kind != "name" or value.lower() in KEYWORDS:
            continue
        following = tokens[index + 1][1].lower() if index + 1 < len(tokens) else ""
        if following in ("(", "by", "without"):
            continue  # a function, or an aggregation operator: sum(...), sum by (le) (...)
        names.append(value)
    return list(dict.fromkeys(names))


def template_expressions(query):
    """The PromQL inside a Grafana template variable's query, if any."""
    if isinstance(query, dict):
        query = query.get("query", "")
    if not isinstance(query, str) or not query.strip():
        return []
    query = query.strip()
    match = re.fullmatch(r"label_values\((.*)\)", query, re.DOTALL)
    if match:
        # label_values(selector, label) or label_values(label): only the selector names metrics.
        inner = match.group(1)
        selector, comma, _ = inner.rpartition(",")
        return [selector] if comma and selector.strip() else []
    match = re.fullmatch(r"query_result\((.*)\)", query, re.DOTALL)
    if match:
        return [match.group(1)]
    if re.fullmatch(r"(label_names|metrics)\(.*\)", query, re.DOTALL):
        return []
    return [query]


def dashboard_expressions(dashboard):
    """Every PromQL expression of a dashboard: (where, expression) pairs."""
    found = []

    def panels(items, path):
        for panel in items or []:
            title = panel.get("title") or f"panel {panel.get('id')}"
            for target in panel.get("targets") or []:
                datasource = target.get("datasource") or panel.get("datasource") or {}
                kind = datasource.get("type", "prometheus") if isinstance(datasource, dict) else "prometheus"
                if kind == "prometheus" and target.get("expr"):
                    found.append((f"{path}{title} [{target.get('refId', '?')}]", target["expr"]))
            panels(panel.get("panels"), f"{path}{title} / ")

    panels(dashboard.get("panels"), "")
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            for expr in template_expressions(variable.get("query")):
                found.append((f"variable ${variable.get('name')}", expr))
    return found


def rule_expressions(rules):
    """Every expression of a rule file, and the names its recording rules define."""
    found, recorded = [], set()
    for group in (rules or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            where = f"{group.get('name')} / {rule.get('alert') or rule.get('record')}"
            if rule.get("expr") is not None:
                found.append((where, str(rule["expr"])))
            if rule.get("record"):
                recorded.add(rule["record"])
    return found, recorded


def read_expressions(path):
    """(where, expression) pairs of a dashboard or rule file, and the names it records."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise CheckError(f"{path}: cannot read: {error.strerror}") from error
    if path.endswith(".json"):
        try:
            dashboard = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckError(f"{path}: invalid JSON: {error}") from error
        if not isinstance(dashboard, dict):
            raise CheckError(f"{path}: not a dashboard (the top level is not an object)")
        return dashboard_expressions(dashboard), set()
    try:
        import yaml
    except ImportError as error:
        raise CheckError("PyYAML is needed to read rule files (scripts/chart.sh installs it)") from error
    try:
        rules = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CheckError(f"{path}: invalid YAML: {error}") from error
    return rule_expressions(rules)


def known_names(text):
    """The names a metrics dump makes selectable, from its TYPE lines and samples."""
    known = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                family, kind = parts[2], parts[3]
                known.add(family)
                if kind == "counter" and not family.endswith("_total"):
                    known.update({f"{family}_total", f"{family}_created"})
                elif kind == "counter":
                    known.add(f"{family[: -len('_total')]}_created")
                elif kind in ("histogram", "gaugehistogram"):
                    known.update({f"{family}_bucket", f"{family}_sum", f"{family}_count",
                                  f"{family}_gsum", f"{family}_gcount", f"{family}_created"})
                elif kind == "summary":
                    known.update({f"{family}_sum", f"{family}_count", f"{family}_created"})
                elif kind == "info":
                    known.add(f"{family}_info")
            continue
        match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if match:
            known.add(match.group())
    return known


def check(paths, known):
    """Returns one line per unknown name (empty when all are known), and how many were checked."""
    problems, checked, recorded, expressions = [], 0, set(), []
    for path in paths:
        found, names = read_expressions(path)
        recorded |= names
        expressions += [(path, where, expr) for where, expr in found]
    for path, where, expr in expressions:
        for name in metric_names(expr):
            checked += 1
            if known is not None and name not in known and name not in recorded:
                one_line = " ".join(expr.split())
                problems.append(f"{os.path.relpath(path, ROOT)}: {where}: unknown metric {name!r} in: {one_line}")
    return problems, checked, len(expressions)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="dashboards (.json) and rule files (.yaml)")
    parser.add_argument("--dump", default=os.environ.get("PLATFORM_METRICS_DUMP"),
                        help="metrics dump (default: $PLATFORM_METRICS_DUMP)")
    parser.add_argument("--parse-only", action="store_true", help="read and extract, check no names")
    args = parser.parse_args(argv)
    paths = args.files or sorted(p for pattern in DEFAULT_FILES for p in glob.glob(os.path.join(ROOT, pattern)))
    if not paths:
        print("check-dashboards: no dashboards or rule files found", file=sys.stderr)
        return 1
    known = None
    if not args.parse_only:
        if not args.dump:
            print("check-dashboards: no metrics dump: set PLATFORM_METRICS_DUMP or pass --dump "
                  "(or --parse-only to check no names)", file=sys.stderr)
            return 2
        try:
            with open(args.dump, encoding="utf-8") as dump:
                known = known_names(dump.read())
        except OSError as error:
            print(f"check-dashboards: cannot read the metrics dump {args.dump}: {error.strerror}", file=sys.stderr)
            return 1
        if not known:
            print(f"check-dashboards: the metrics dump {args.dump} holds no metric at all", file=sys.stderr)
            return 1
    try:
        problems, checked, expressions = check(paths, known)
    except CheckError as error:
        print(f"check-dashboards: {error}", file=sys.stderr)
        return 1
    if expressions == 0:
        print("check-dashboards: no PromQL expression found in " + ", ".join(paths), file=sys.stderr)
        return 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        unknown = sorted({re.search(r"unknown metric '([^']+)'", p).group(1) for p in problems})
        print(f"check-dashboards: {len(unknown)} metric name(s) the dump {args.dump} does not have, "
              f"used {len(problems)} time(s): {', '.join(unknown)}", file=sys.stderr)
        return 1
    what = "extracted, not checked (--parse-only)" if known is None else f"known in {args.dump}"
    print(f"check-dashboards: {len(paths)} files, {expressions} expressions, {checked} metric names {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
