"""Tests of scripts/check-dashboards.py: the PromQL metric-name extractor and the dump check."""

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import textwrap
import unittest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "check-dashboards.py")
_spec = importlib.util.spec_from_file_location("check_dashboards", SCRIPT)
check_dashboards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dashboards)
names = check_dashboards.metric_names

# A merged exposition as metrics_aggregator writes it (0.0.4: counters keep their _total name)
# and as a service writes it (OpenMetrics: the counter family has no _total).
DUMP = textwrap.dedent("""\
    # HELP http_requests_total HTTP requests answered
    # TYPE http_requests_total counter
    http_requests_total{service="app",instance="10.0.0.1:3000",method="GET",route="/",status="200"} 3 1700000000000
    # TYPE http_request_duration_seconds histogram
    http_request_duration_seconds_bucket{service="app",instance="10.0.0.1:3000",le="+Inf"} 3
    http_request_duration_seconds_sum{service="app",instance="10.0.0.1:3000"} 0.1
    http_request_duration_seconds_count{service="app",instance="10.0.0.1:3000"} 3
    # TYPE mail_sent counter
    mail_sent_total{kind="welcome"} 1
    # TYPE ask_duration_seconds histogram
    # TYPE rpc summary
    rpc_sum 1
    # TYPE service info
    untyped_sample 1
    # TYPE up gauge
    up{service="app",instance="10.0.0.1:3000"} 1
    # EOF
""")


class Extraction(unittest.TestCase):
    def test_selectors_with_label_matchers_and_grafana_variables(self):
        self.assertEqual(
            names('sum by (service) (rate(http_requests_total{service=~"$service",status=~"5.."}[$__rate_interval]))'),
            ["http_requests_total"],
        )
        self.assertEqual(names("rate(foo_total{a=\"${service:regex}\"}[${__range}])"), ["foo_total"])
        self.assertEqual(names("rate(foo_total[[[interval]]])"), ["foo_total"])

    def test_functions_aggregations_and_their_label_lists_are_not_metrics(self):
        expr = "histogram_quantile(0.99, sum by (le, service) (rate(latency_bucket[5m])))"
        self.assertEqual(names(expr), ["latency_bucket"])
        self.assertEqual(names("topk(10, sum(rate(a_total[5m])) by (route))"), ["a_total"])
        self.assertEqual(names("count without (instance, job) (b)"), ["b"])
        self.assertEqual(names("max by(stream)(queue_depth) > 100"), ["queue_depth"])

    def test_keywords_numbers_durations_and_strings_are_skipped(self):
        expr = (
            'a offset 1h30m / on (service) group_left (version) b > bool 1e3 unless c and d or e '
            '+ Inf - NaN + 0x1f'
        )
        self.assertEqual(names(expr), ["a", "b", "c", "d", "e"])
        expr = 'label_replace(up, "dst", "$1 some_metric", "src", "(.*)") or absent(x{service="by"})'
        self.assertEqual(names(expr), ["up", "x"])
        self.assertEqual(names("vector(0) + time() + scalar(y)"), ["y"])

    def test_ranges_subqueries_and_name_matchers(self):
        self.assertEqual(names("deriv((max by (stream) (queue_depth))[15m:1m]) > 0"), ["queue_depth"])
        self.assertEqual(names('{__name__="named_metric", job="x"}'), ["named_metric"])
        self.assertEqual(names('{__name__=~"regex_.*"}'), [])
        self.assertEqual(names("a @ start() offset -5m"), ["a"])

    def test_template_variables_of_dashboards(self):
        expressions = check_dashboards.template_expressions
        self.assertEqual(expressions("label_values(up{job=\"x\"}, service)"), ['up{job="x"}'])
        self.assertEqual(expressions({"query": "label_values(service)"}), [])
        self.assertEqual(expressions("query_result(topk(5, foo))"), ["topk(5, foo)"])
        self.assertEqual(expressions("label_names()"), [])


class KnownNames(unittest.TestCase):
    def test_families_imply_their_sample_names(self):
        known = check_dashboards.known_names(DUMP)
        for name in (
            "http_requests_total", "http_request_duration_seconds_bucket", "http_request_duration_seconds_count",
            "mail_sent", "mail_sent_total", "mail_sent_created", "ask_duration_seconds_bucket", "rpc_sum",
            "service_info", "untyped_sample", "up",
        ):
            self.assertIn(name, known)
        for name in ("http_requests", "mail_sent_count", "http_request_duration_seconds_total", "EOF"):
            self.assertNotIn(name, known)


class Check(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)
        self.dump = self.write("dump.txt", DUMP)

    def write(self, name, text):
        path = os.path.join(self.directory.name, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return path

    def dashboard(self, *expressions, rows=False):
        panels = [{"id": i, "type": "timeseries", "title": f"panel {i}", "targets": [{"refId": "A", "expr": e}]}
                  for i, e in enumerate(expressions)]
        if rows:
            panels = [{"id": 99, "type": "row", "title": "row", "panels": panels}]
        return json.dumps({
            "panels": panels,
            "templating": {"list": [{"name": "service", "type": "query", "query": "label_values(up, service)"}]},
        })

    def run_check(self, *paths):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = check_dashboards.main(["--dump", self.dump, *paths])
        return status, out.getvalue(), err.getvalue()

    def test_known_names_pass(self):
        board = self.write("board.json", self.dashboard(
            'sum(rate(http_requests_total{service=~"$service"}[$__rate_interval]))',
            "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
            rows=True,
        ))
        rules = self.write("a.rules.yaml", "groups:\n  - name: g\n    rules:\n"
                           "      - record: service:mail:rate5m\n        expr: rate(mail_sent_total[5m])\n"
                           "      - alert: A\n        expr: service:mail:rate5m > 0\n")
        status, out, err = self.run_check(board, rules)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("2 files, 5 expressions", out)

    def test_a_misspelled_metric_fails_with_its_file_and_expression(self):
        board = self.write("board.json", self.dashboard(
            "sum(rate(http_requests_total[5m]))", 'sum(rate(http_request_total{status=~"5.."}[5m]))',
        ))
        status, _, err = self.run_check(board)
        self.assertEqual(status, 1)
        self.assertIn("board.json: panel 1 [A]: unknown metric 'http_request_total' in: "
                      'sum(rate(http_request_total{status=~"5.."}[5m]))', err)
        self.assertNotIn("'http_requests_total'", err)

    def test_a_counter_without_its_total_suffix_is_unknown_in_an_alert(self):
        rules = self.write("b.rules.yaml", "groups:\n  - name: g\n    rules:\n"
                           "      - alert: A\n        expr: rate(http_requests[5m]) > 0\n")
        status, _, err = self.run_check(rules)
        self.assertEqual(status, 1)
        self.assertIn("g / A: unknown metric 'http_requests'", err)

    def test_invalid_files_fail(self):
        status, _, err = self.run_check(self.write("broken.json", '{"panels": [}'))
        self.assertEqual(status, 1)
        self.assertIn("broken.json: invalid JSON", err)
        status, _, err = self.run_check(self.write("c.rules.yaml", "groups: [\n"))
        self.assertEqual(status, 1)
        self.assertIn("invalid YAML", err)

    def test_a_missing_or_empty_dump_fails(self):
        board = self.write("board.json", self.dashboard("up"))
        self.dump = os.path.join(self.directory.name, "missing.txt")
        self.assertEqual(self.run_check(board)[0], 1)
        self.dump = self.write("empty.txt", "# EOF\n")
        status, _, err = self.run_check(board)
        self.assertEqual(status, 1)
        self.assertIn("holds no metric", err)

    def test_the_charts_own_dashboards_and_rules_parse(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(check_dashboards.main(["--parse-only"]), 0)
        self.assertRegex(out.getvalue(), r"[4-9] files, \d+ expressions")


if __name__ == "__main__":
    unittest.main()
