#!/usr/bin/python3
"""A real Prometheus scrapes a router, a prefill node and a decode node, and finds what docs/metrics.md promises.

Usage: check_prometheus.py RECGPT_BINARY MODEL_DIR SOURCE_DIR WORK_DIR

Starts the three processes on 127.0.0.1 and `prometheus` (Debian's) scraping them each second with
deploy/prometheus's rules loaded, sends two rounds of traffic (chat completions, one streamed, one refused, an
`intent` workflow), checks each /metrics with `promtool check metrics`, then, through Prometheus's HTTP API:
- every target is up, and the metric families each one exposes (name and type) are exactly docs/metrics.md's
  table for its kind of process;
- each figure of ../shared/DESIGN.md §5 is there, with the values the traffic implies (request counts by code,
  one latency observation per completion, every workflow stage, inter-token gaps for every decoded token, cached
  prefix tokens, KV bytes moved and no failed transfer, blocks used + free = the pool, nodes up);
- deploy/prometheus/recgpt-rules.yml loads and evaluates without error, its recording rules have values and no
  alert is pending or firing; every query of deploy/grafana's dashboards returns a finite value.
Exits 1 on any failed check; every process it started is stopped, whatever happens.
"""
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from recgpt_up import free_port  # noqa: E402

STARTUP_SECONDS = 60
SCRAPE_SECONDS = 60


class Failed(Exception):
    pass


def wait_for(what, deadline_seconds, probe, interval=0.2):
    """probe() until it returns a true value; Failed naming `what` past the deadline."""
    deadline = time.monotonic() + deadline_seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, urllib.error.URLError) as error:
            last_error = error
        time.sleep(interval)
    raise Failed(f"{what}: not within {deadline_seconds} s" + (f" (last error: {last_error})" if last_error else ""))


class Processes:
    """Children started in their own process groups, all stopped by stop_all()."""

    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.children = []

    def start(self, name, argv):
        log = open(os.path.join(self.work_dir, f"{name}.log"), "wb")
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self.children.append((name, child, log))
        return child

    def first_line(self, name, child):
        """The child's first stdout line (its `listening` line); the rest of stdout is drained in the background."""
        chooser = selectors.DefaultSelector()
        chooser.register(child.stdout, selectors.EVENT_READ)
        if not chooser.select(timeout=STARTUP_SECONDS):
            raise Failed(f"{name}: no line on stdout within {STARTUP_SECONDS} s")
        line = child.stdout.readline().decode()
        threading.Thread(target=lambda: child.stdout.read(), daemon=True).start()
        if not line:
            raise Failed(f"{name}: exited ({child.wait()}) before saying where it listens; see {name}.log")
        return line

    def stop_all(self):
        for _, child, _ in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for name, child, log in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=15)
            log.close()


def port_in(line, key):
    match = re.search(rf"\b{key}=(\d+)", line)
    if not match:
        raise Failed(f"no {key}= in: {line.strip()}")
    return int(match.group(1))


def http(url, body=None, timeout=30):
    """(status, text) of a GET, or of a POST of `body` (a dict, sent as JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def documented_families(metrics_md):
    """{section: {name: type}} from docs/metrics.md's tables under '## Router', '## Prefill node', '## Decode node'
    (a row whose labels read "as on prefill nodes" takes the types of the prefill node's rows)."""
    families, section = {}, None
    with open(metrics_md) as text:
        for line in text:
            heading = re.match(r"## (Router|Prefill node|Decode node)\s*$", line)
            if heading:
                section = heading.group(1)
                families[section] = {}
            elif line.startswith("## "):
                section = None
            row = re.match(r"\| `(recgpt_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", line)
            if section and row:
                families[section][row.group(1)] = row.group(2)
            elif section and line.startswith("| `recgpt_") and "| as on prefill nodes |" in line:
                for name in re.findall(r"`(recgpt_[a-z0-9_]+)`", line.split("|")[1]):
                    families[section][name] = families["Prefill node"][name]
    return families


def finite(samples):
    return [sample for _, sample in samples if math.isfinite(sample)]


def check_rules_and_dashboards(source_dir, checks, get, query):
    """deploy/prometheus's rules evaluate cleanly on live series, record values and alert on nothing (the cluster
    is healthy); every query of deploy/grafana's dashboards returns data."""
    rules_file = os.path.join(source_dir, "deploy", "prometheus", "recgpt-rules.yml")
    with open(rules_file) as text:
        declared = re.findall(r"^\s*- (record|alert): (\S+)", text.read(), re.MULTILINE)
    records = [name for kind, name in declared if kind == "record"]
    try:
        wait_for("the recording rules' first values", SCRAPE_SECONDS,
                 lambda: all(finite(query(name)) for name in records), interval=0.5)
    except Failed as failure:  # the checks below name the rules without one
        print(f"note: {failure}")
    loaded = [rule for group in get("rules")["groups"] for rule in group["rules"]]
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"]
    checks.expect(len(loaded) == len(declared) and not unhealthy,
                  f"rules: {len(loaded)} loaded of {len(declared)} in recgpt-rules.yml, unhealthy {unhealthy}")
    alerts = query("ALERTS")
    checks.expect(not alerts, f"no alert pending or firing on the healthy cluster: {[a[0] for a in alerts]}")
    for name in records:
        checks.expect(bool(finite(query(name))), f"recording rule {name}: {finite(query(name))[:3]}")
    dashboards = os.path.join(source_dir, "deploy", "grafana")
    for file_name in sorted(os.listdir(dashboards)):
        with open(os.path.join(dashboards, file_name)) as text:
            dashboard = json.load(text)
        # Grafana's variables as a dashboard of every node would set them (the range: all the test's).
        targets = [(f"{panel['title']}: {target['legendFormat']}",
                    target["expr"].replace("$__rate_interval", "5m").replace("$node", ".+"))
                   for panel in dashboard["panels"] for target in panel.get("targets", [])]

        def without_value():
            return [name for name, expr in targets if not finite(query(expr))]

        # A rate needs two scrapes of its series: on a loaded machine a scrape can come late or time out.
        try:
            wait_for(f"{file_name}'s queries", SCRAPE_SECONDS, lambda: not without_value(), interval=1)
        except Failed as failure:
            print(f"note: {failure}")
        empty = without_value()
        checks.expect(targets and not empty,
                      f"{file_name}: {len(targets)} panel queries, those without a finite value: {empty}")


class Checks:
    def __init__(self):
        self.failures = 0

    def expect(self, ok, what):
        print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
        if not ok:
            self.failures += 1


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    recgpt, model, source_dir, work_dir = sys.argv[1:]
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"FAIL: `{tool}` is not installed (Debian's `prometheus` package; scripts/install-deps.sh installs it)")
            return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    processes = Processes(work_dir)
    try:
        return run(recgpt, model, source_dir, work_dir, processes)
    except Failed as failure:
        print(f"FAIL: {failure} (logs in {work_dir})")
        return 1
    finally:
        processes.stop_all()


def run(recgpt, model, source_dir, work_dir, processes):
    checks = Checks()
    node_args = ["--model", model, "--catalogue", "tags=builtin", "--kv-cache-mib", "64", "--threads", "1",
                 "--port", "0", "--admin-port", "0"]
    ports = {}
    for role in ("prefill", "decode"):
        child = processes.start(role, [recgpt, role, *node_args, "--node-id", f"{role}-0"])
        line = processes.first_line(role, child)
        ports[role] = (port_in(line, "port"), port_in(line, "admin_port"))
    router = processes.start("router", [recgpt, "router", "--model", model, "--port", "0",
                                        "--prefill", f"127.0.0.1:{ports['prefill'][0]}",
                                        "--decode", f"127.0.0.1:{ports['decode'][0]}"])
    router_port = port_in(processes.first_line("router", router), "port")
    base = f"http://127.0.0.1:{router_port}"
    wait_for("the router's /readyz", STARTUP_SECONDS, lambda: http(base + "/readyz", timeout=5)[0] == 200)

    # A real Prometheus scrapes them each second from before the traffic (so that rates see it), and evaluates
    # deploy/prometheus's rules.
    targets = {"router": router_port, "prefill": ports["prefill"][1], "decode": ports["decode"][1]}
    prometheus_port = free_port()
    config = os.path.join(work_dir, "prometheus.yml")
    with open(config, "w") as out:
        out.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n")
        out.write(f"rule_files:\n  - {os.path.join(source_dir, 'deploy', 'prometheus', 'recgpt-rules.yml')}\n")
        out.write("scrape_configs:\n")
        for job, port in targets.items():
            out.write(f"  - job_name: recgpt-{job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    checked = subprocess.run(["promtool", "check", "config", config], capture_output=True, text=True, timeout=60)
    if checked.returncode != 0:
        raise Failed(f"promtool check config: {checked.stdout}{checked.stderr}")
    processes.start("prometheus", ["prometheus", f"--config.file={config}",
                                   f"--storage.tsdb.path={os.path.join(work_dir, 'tsdb')}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"])
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"

    def get(path, **params):
        status, text = http(f"{api}/{path}?{urllib.parse.urlencode(params)}", timeout=10)
        if status != 200:
            raise ValueError(f"{path}: {status} {text[:200]}")
        return json.loads(text)["data"]

    def query(expr):
        """[(labels, value)] of an instant query."""
        return [(sample["metric"], float(sample["value"][1])) for sample in get("query", query=expr)["result"]]

    def value(expr):
        samples = query(expr)
        if len(samples) != 1:
            raise Failed(f"`{expr}` gave {len(samples)} samples, not one: {samples[:4]}")
        return samples[0][1]

    def all_up():
        active = get("targets", state="active")["activeTargets"]
        return len(active) == 3 and all(target["health"] == "up" for target in active)

    wait_for("Prometheus scraping all three targets", SCRAPE_SECONDS, all_up, interval=0.5)

    # Traffic, twice: series a first round creates exist in the second's scrapes, so rates over them see the
    # second. The same prompt three times a round: the later ones find its prefix cached on the prefill node.
    chat = {"model": "recgpt", "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "The user bought hiking boots and a rain jacket. Suggest gear."}]}
    with open(os.path.join(source_dir, "examples", "intent_request.json")) as request:
        intent = json.load(request)
    completion_tokens = []
    workflow_steps = set()
    for round_number in (1, 2):
        for _ in range(3):
            status, text = http(base + "/v1/chat/completions", chat)
            if status != 200:
                raise Failed(f"a chat completion answered {status}: {text[:300]}")
            completion_tokens.append(json.loads(text)["usage"]["completion_tokens"])
        status, text = http(base + "/v1/chat/completions",
                            dict(chat, stream=True, stream_options={"include_usage": True}))
        usage = [json.loads(line[6:])["usage"] for line in text.splitlines()
                 if line.startswith("data: {") and '"usage":{' in line]
        if status != 200 or not usage:
            raise Failed(f"the streamed completion answered {status} without usage: {text[-300:]}")
        completion_tokens.append(usage[-1]["completion_tokens"])
        # Structured output, for the decode node's JSON mask lookups.
        status, text = http(base + "/v1/chat/completions", dict(chat, max_tokens=80, response_format={
            "type": "json_schema", "json_schema": {"name": "gear", "schema": {
                "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}))
        if status != 200:
            raise Failed(f"a structured completion answered {status}: {text[:300]}")
        completion_tokens.append(json.loads(text)["usage"]["completion_tokens"])
        status, text = http(base + "/v1/chat/completions", {"model": "recgpt", "messages": "not a list"})
        checks.expect(status == 400, f"a malformed completion is refused: {status}")
        status, text = http(base + "/v1/workflows/intent", intent, timeout=120)
        if status != 200:
            raise Failed(f"the intent workflow answered {status}: {text[:300]}")
        workflow_steps |= set(json.loads(text)["timings"]["steps"])
        wait_for(f"the scrape of traffic round {round_number}", SCRAPE_SECONDS,
                 lambda: query(f'recgpt_router_requests_total{{path="/v1/workflows",code="200"}} == {round_number}'),
                 interval=0.5)

    # Each exposition passes promtool's format and naming checks.
    for job, port in targets.items():
        status, exposition = http(f"http://127.0.0.1:{port}/metrics")
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True,
                              timeout=60)
        problems = (lint.stdout + lint.stderr).strip()
        checks.expect(status == 200 and lint.returncode == 0 and not problems,
                      f"{job} /metrics passes `promtool check metrics`" + (f": {problems[:500]}" if problems else ""))

    checks.expect(value("sum(up)") == 3, "every target is up")

    # docs/metrics.md's tables against what each kind of process exposes.
    documented = documented_families(os.path.join(source_dir, "docs", "metrics.md"))
    for job, section in (("router", "Router"), ("prefill", "Prefill node"), ("decode", "Decode node")):
        scraped = {}
        for entry in get("targets/metadata", match_target=f'{{job="recgpt-{job}"}}'):
            if entry["metric"].startswith("recgpt_"):
                scraped[entry["metric"]] = entry["type"]
        expected = documented.get(section, {})
        missing = sorted(set(expected) - set(scraped))
        undocumented = sorted(set(scraped) - set(expected))
        mistyped = sorted(name for name in set(expected) & set(scraped) if expected[name] != scraped[name])
        checks.expect(expected and not missing and not undocumented and not mistyped,
                      f"{job}: {len(scraped)} families scraped = docs/metrics.md's {len(expected)}"
                      f" (missing {missing}, undocumented {undocumented}, mistyped {mistyped})")

    # DESIGN §5's figures, with the values the traffic implies.
    answered = len(completion_tokens)
    count = value('sum(recgpt_router_requests_total{path="/v1/chat/completions",code="200"})')
    checks.expect(count == answered, f"completions answered 200: {count:g} (sent {answered})")
    count = value('sum(recgpt_router_requests_total{path="/v1/chat/completions",code="400"})')
    checks.expect(count == 2, f"completions refused 400: {count:g} (sent 2)")
    count = value('sum(recgpt_request_duration_seconds_count{stage="completion"})')
    checks.expect(count == answered, f"end-to-end completion latencies observed: {count:g}")
    count = value('sum(recgpt_time_to_first_token_seconds_count{stage="completion"})')
    median = value('histogram_quantile(0.5, sum by (le) (recgpt_time_to_first_token_seconds_bucket{stage="completion"}))')
    checks.expect(count == answered and 0 < median < math.inf,
                  f"time to first token: {count:g} observations, median {median * 1e3:.1f} ms")
    with_gaps = sum(1 for tokens in completion_tokens if tokens >= 2)
    count = value('sum(recgpt_time_per_output_token_seconds_count{stage="completion"})')
    checks.expect(count == with_gaps, f"time per output token: {count:g} observations (completions of 2+ tokens: "
                                      f"{with_gaps})")
    gaps = value("sum(recgpt_inter_token_latency_seconds_count)")
    decoded_after_first = sum(max(0, tokens - 1) for tokens in completion_tokens)
    checks.expect(gaps >= decoded_after_first,
                  f"inter-token gaps on the decode node: {gaps:g} (completions alone decoded {decoded_after_first} "
                  f"tokens after their first)")
    stages = {labels["stage"] for labels, _ in query('recgpt_workflow_stage_duration_seconds_count{workflow="intent"}')}
    checks.expect(stages == workflow_steps and len(stages) >= 3,
                  f"workflow stages timed: {sorted(stages)} (the workflow ran {sorted(workflow_steps)})")
    ttft_stages = {labels["stage"] for labels, _ in query('recgpt_time_to_first_token_seconds_count{workflow="intent"}')}
    checks.expect(ttft_stages == workflow_steps, f"time to first token by workflow stage: {sorted(ttft_stages)}")
    count = value('sum(recgpt_workflow_duration_seconds_count)')
    checks.expect(count == 2, f"workflow latencies observed: {count:g} (answered 2)")
    states = {(labels["role"], labels["state"]) for labels, _ in query("recgpt_requests")}
    checks.expect(states == {("prefill", "waiting"), ("prefill", "running"), ("decode", "reserved"),
                             ("decode", "running")}, f"requests by state: {sorted(states)}")
    running = value('sum(recgpt_router_requests_running)')
    checks.expect(running == 0, f"router requests running once answered: {running:g}")
    status, cluster = http(base + "/v1/cluster")
    pools = {node["role"]: node["kv_blocks_free"] + node["kv_blocks_used"] for node in json.loads(cluster)["nodes"]}
    for role in ("prefill", "decode"):
        total = value(f'sum(recgpt_kv_blocks{{role="{role}"}})')
        used = value(f'sum(recgpt_kv_blocks{{role="{role}",state="used"}})')
        checks.expect(total == pools[role] and used == 0,
                      f"{role} KV blocks used + free = {total:g} (pool {pools[role]}), used once idle {used:g}")
    cached = value('sum(recgpt_prefill_tokens_total{kind="cached"})')
    computed = value('sum(recgpt_prefill_tokens_total{kind="computed"})')
    prompts = value('sum(recgpt_router_tokens_total{kind="prompt"})')
    checks.expect(cached > 0 and computed > 0 and cached + computed >= prompts,
                  f"prefill tokens: computed {computed:g}, cached {cached:g} (completions' prompts alone: {prompts:g})")
    moved = value('sum(recgpt_kv_transfer_bytes_total{outcome="ok"})')
    writes = value('sum(recgpt_kv_transfer_operations_total{operation="writes",outcome="ok"})')
    timed = value('sum(recgpt_kv_transfer_duration_seconds_count{operation="writes"})')
    failed = value('sum(recgpt_kv_transfer_operations_total{outcome!="ok"})')
    checks.expect(moved > 0 and writes > 0 and timed == writes and failed == 0,
                  f"KV transfer: {moved:g} bytes in {writes:g} write batches, {timed:g} timed, {failed:g} not ok")
    masks = value("sum(recgpt_constraint_mask_seconds_total)")
    steps = value("sum(recgpt_constraint_steps_total)")
    checks.expect(masks > 0 and steps > 0, f"constraint masks: {steps:g} steps in {masks * 1e3:.2f} ms")
    up = query("recgpt_node_up")
    checks.expect(len(up) == 2 and all(sample == 1 for _, sample in up),
                  f"nodes up: {[(labels['role'], labels['node'], sample) for labels, sample in up]}")

    check_rules_and_dashboards(source_dir, checks, get, query)
    print(f"{'FAIL' if checks.failures else 'PASS'}: prometheus scrape, {checks.failures} failed check(s)")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
