#!/usr/bin/python3
"""Chaos soak of a local cluster: a router over prefill and decode nodes on 127.0.0.1, clients sending chat
completions (whole, streamed, and streams hung up early) and `intent` workflows, while nodes are killed (SIGKILL),
stopped (SIGTERM, a graceful drain) or frozen (SIGSTOP for a few seconds) and started again on their ports.

Afterwards every node must be back, fresh requests must all succeed, and every KV block must come back. A finding
is anything a production cluster must not do: a process exiting on its own (a crash), a client left without an
answer past its timeout, a malformed answer, a 4xx to a well-formed request, KV blocks or running requests left
behind. Exits 1 when there is one. Not a CI test (it runs minutes and its schedule is random); run it by hand after
touching failure paths:

    cmake --build --preset ci --target recgpt
    /usr/bin/python3 scripts/chaos_soak.py --seconds 120

Uses only the Python standard library. Logs of every process start are kept under --logs.
"""
import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recgpt", default=os.path.join(ROOT, "build/ci/recgpt"))
    p.add_argument("--model", help="model folder (default: the tiny preset, made in a temporary folder)")
    p.add_argument("--seconds", type=float, default=120, help="how long the chaos runs")
    p.add_argument("--clients", type=int, default=6, help="client threads, each sending one request after another")
    p.add_argument("--prefill", type=int, default=2, help="prefill nodes")
    p.add_argument("--decode", type=int, default=2, help="decode nodes")
    p.add_argument("--victims", default="prefill,decode", help="roles or node names the chaos picks from")
    p.add_argument("--actions", default="kill:6,term:2,stop:2", help="action:weight,... of kill, term, stop")
    p.add_argument("--gap", type=float, nargs=2, default=[3, 6], help="seconds between chaos events (min max)")
    p.add_argument("--restart-after", type=float, nargs=2, default=[0.5, 3], help="seconds down (min max)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls", default="tcp", help="the nodes' UCX transports (shared memory: posix,cma,self)")
    p.add_argument("--logs", default=os.path.join(tempfile.gettempdir(), "recgpt-chaos-soak"))
    p.add_argument("--ucx-log-restarted", metavar="LEVEL", help="UCX_LOG_LEVEL of nodes started again")
    return p.parse_args()


ARGS = parse_args()
START = time.time()
LOCK = threading.Lock()
OUTCOMES = collections.Counter()
FINDINGS = []
STOP = threading.Event()
ROUTER_DOWN = []  # (from, to) times the router was down or frozen: requests spanning them may end any way


def log(message):
    print(f"{time.time() - START:8.2f} {message}", flush=True)


def finding(message):
    with LOCK:
        FINDINGS.append(message)
    log("FINDING " + message)


def count(kind):
    with LOCK:
        OUTCOMES[kind] += 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A node or the router, started again on the same ports after each death."""

    def __init__(self, role, name, argv_for):
        self.role, self.name, self.argv_for = role, name, argv_for
        self.proc, self.starts, self.expected_exit = None, 0, False

    def start(self):
        self.starts += 1
        env = dict(os.environ)
        if self.starts > 1 and ARGS.ucx_log_restarted:
            env["UCX_LOG_LEVEL"] = ARGS.ucx_log_restarted
        stderr = open(os.path.join(ARGS.logs, f"{self.name}.{self.starts}.err"), "w")
        proc = subprocess.Popen(self.argv_for(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env)
        with LOCK:  # the watcher reads both at once
            self.proc, self.expected_exit = proc, False

    def log_file(self):
        return os.path.join(ARGS.logs, f"{self.name}.{self.starts}.err")


def node_process(role, index, model):
    port, admin = free_port(), free_port()
    name = f"{role}-{index}"
    process = Process(role, name, lambda: [
        ARGS.recgpt, role, "--model", model, "--kv-cache-mib", "16", "--threads", "1", "--port", str(port),
        "--admin-port", str(admin), "--node-id", name, "--transfer-setting", f"tls={ARGS.tls}", "--drain-seconds", "5",
        "--catalogue", "tags=builtin"])
    process.port, process.admin = port, admin
    return process


def http(url, body=None, timeout=5):
    request = urllib.request.Request(url, data=body.encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read().decode()


def metric_samples(text, name):
    samples = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            label, value = line.rsplit(" ", 1)
            samples.append((label, float(value)))
    return samples


def cluster_ready(base, nodes, deadline):
    while time.time() < deadline:
        try:
            cluster = json.loads(http(base + "/v1/cluster")[1])
            if len(cluster["nodes"]) == len(nodes) and all(n["healthy"] for n in cluster["nodes"]):
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    return False


def post(base, path, body, timeout, stream=False, hang_up_after=None):
    """(status, parsed answer); a stream's answer is its event count, or the error event it ended with."""
    request = urllib.request.Request(base + path, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not stream:
                return response.status, json.loads(response.read().decode())
            events = 0
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return response.status, {"events": events}
                event = json.loads(line[6:])
                if "error" in event:
                    return "stream error", event
                events += 1
                if hang_up_after is not None and events >= hang_up_after:
                    return response.status, {"hung_up_after": events}
            return "stream cut", {"events": events}
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"unparsed": text[:200]}


WORDS = ["shoes", "tent", "coffee", "winter", "gift", "snow", "map", "boots", "stove", "jacket"]


def client(index, base, intent):
    rnd = random.Random(ARGS.seed * 1000 + index)
    while not STOP.is_set():
        kind = rnd.choice(["chat", "chat", "stream", "hang up", "intent"])
        body = {"model": "recgpt", "messages": [{"role": "user", "content": " ".join(
            rnd.choice(WORDS) for _ in range(rnd.randint(5, 60)))}], "max_tokens": rnd.randint(1, 64),
            "temperature": rnd.choice([0, 0.7]), "seed": rnd.randint(0, 1000)}
        started = time.time()
        try:
            if kind == "intent":
                status, answer = post(base, "/v1/workflows/intent", intent, timeout=90)
            elif kind == "chat":
                status, answer = post(base, "/v1/chat/completions", json.dumps(body), timeout=60)
            else:
                body["stream"] = True
                status, answer = post(base, "/v1/chat/completions", json.dumps(body), timeout=60, stream=True,
                                      hang_up_after=rnd.randint(1, 4) if kind == "hang up" else None)
        except (socket.timeout, TimeoutError):
            finding(f"{kind}: no answer within the client's timeout ({time.time() - started:.0f} s)")
            continue
        except (OSError, ValueError) as error:  # the router itself down (a victim), or an unparsable answer
            count(f"{kind}: {type(error).__name__}")
            if isinstance(error, ValueError):
                finding(f"{kind}: unparsable answer: {error}")
            continue
        if status == 200:
            count(f"{kind}: ok")
        elif isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            code = answer["error"].get("code") or answer["error"].get("type")
            count(f"{kind}: {status} {code}")
            if isinstance(status, int) and 400 <= status < 500 and status != 429:
                finding(f"{kind}: {status} to a well-formed request: {answer['error'].get('message')}")
        elif router_was_down(started, time.time()):
            count(f"{kind}: {status} (the router went down)")
        else:
            count(f"{kind}: {status} MALFORMED")
            finding(f"{kind}: {status} without an OpenAI-style error: {str(answer)[:200]}")


def router_was_down(begin, end):
    with LOCK:
        return any(down_from <= end and (down_to is None or down_to >= begin) for down_from, down_to in ROUTER_DOWN)


def mark_router(victim, down):
    if victim.role != "router":
        return
    with LOCK:
        if down:
            ROUTER_DOWN.append((time.time(), None))
        else:
            ROUTER_DOWN[-1] = (ROUTER_DOWN[-1][0], time.time())


def chaos(victims):
    rnd = random.Random(ARGS.seed)
    actions, weights = zip(*((a, float(w)) for a, w in (item.split(":") for item in ARGS.actions.split(","))))
    while not STOP.wait(rnd.uniform(*ARGS.gap)):
        victim, action = rnd.choice(victims), rnd.choices(actions, weights)[0]
        count(f"chaos: {action} {victim.role}")
        if action == "stop":
            log(f"chaos: SIGSTOP {victim.name} (pid {victim.proc.pid})")
            mark_router(victim, True)
            victim.proc.send_signal(signal.SIGSTOP)
            time.sleep(rnd.uniform(*ARGS.restart_after))
            victim.proc.send_signal(signal.SIGCONT)
            mark_router(victim, False)
            log(f"chaos: SIGCONT {victim.name}")
            continue
        sig = signal.SIGKILL if action == "kill" else signal.SIGTERM
        log(f"chaos: {sig.name} {victim.name} (pid {victim.proc.pid})")
        victim.expected_exit = True
        mark_router(victim, True)
        victim.proc.send_signal(sig)
        try:
            victim.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            finding(f"{victim.name} still running 15 s after {sig.name} (drain is 5 s)")
            victim.proc.kill()
            victim.proc.wait()
        if sig == signal.SIGTERM and victim.proc.returncode != 0:
            finding(f"{victim.name} exited with {victim.proc.returncode} after SIGTERM (log {victim.log_file()})")
        time.sleep(rnd.uniform(*ARGS.restart_after))
        victim.start()
        mark_router(victim, False)
        log(f"chaos: started {victim.name} again (pid {victim.proc.pid})")


def watch(processes):
    """Reports every process that exits without the chaos asking it to: a crash or an abort."""
    reported = set()
    while not STOP.wait(0.05):
        for process in processes:
            with LOCK:
                p, expected = process.proc, process.expected_exit
            if p.poll() is not None and not expected and p.pid not in reported:
                reported.add(p.pid)
                count(f"exited on its own: {process.role}")
                finding(f"{process.name} (pid {p.pid}) exited on its own with {p.returncode}; log {process.log_file()}")


def main():
    os.makedirs(ARGS.logs, exist_ok=True)
    model = ARGS.model
    if model is None:
        model = os.path.join(ARGS.logs, "model-tiny")
        if not os.path.exists(os.path.join(model, "config.json")):
            subprocess.run([ARGS.recgpt, "make-model", "--preset", "tiny", "--seed", "1", "--out", model], check=True,
                           stdout=subprocess.DEVNULL)
    nodes = [node_process("prefill", i, model) for i in range(ARGS.prefill)]
    nodes += [node_process("decode", i, model) for i in range(ARGS.decode)]
    router_port = free_port()

    def router_argv():
        argv = [ARGS.recgpt, "router", "--model", model, "--port", str(router_port), "--request-timeout-seconds", "30"]
        for n in nodes:
            argv += [f"--{n.role}", f"127.0.0.1:{n.port}"]
        return argv

    router = Process("router", "router", router_argv)
    processes = nodes + [router]
    for p in processes:
        p.start()
    base = f"http://127.0.0.1:{router_port}"
    if not cluster_ready(base, nodes, time.time() + 60):
        print("the cluster did not become ready within 60 s; logs in " + ARGS.logs, file=sys.stderr)
        for p in processes:
            p.proc.kill()
        return 2
    log(f"cluster ready: {ARGS.prefill} prefill, {ARGS.decode} decode, router {base}; logs in {ARGS.logs}")
    intent = open(os.path.join(ROOT, "examples/intent_request.json")).read()
    victims = [p for p in processes if p.role in ARGS.victims.split(",") or p.name in ARGS.victims.split(",")]
    threads = [threading.Thread(target=client, args=(i, base, intent)) for i in range(ARGS.clients)]
    threads += [threading.Thread(target=watch, args=(processes,))]
    if victims:
        threads.append(threading.Thread(target=chaos, args=(victims,)))
    for t in threads:
        t.start()
    time.sleep(ARGS.seconds)
    STOP.set()
    for t in threads:
        t.join(timeout=120)
        if t.is_alive():
            finding("a client still waits 120 s after the chaos ended")

    for p in processes:
        if p.proc.poll() is not None:
            p.start()
    if not cluster_ready(base, nodes, time.time() + 60):
        finding("not every node was healthy in /v1/cluster within 60 s after the chaos")
    final = collections.Counter()
    for i in range(8):
        status, answer = post(base, "/v1/chat/completions", json.dumps(
            {"model": "recgpt", "messages": [{"role": "user", "content": f"after the chaos {i}"}], "max_tokens": 8}), 60)
        final[status] += 1
        if status != 200:
            finding(f"a completion after the chaos: {status} {str(answer)[:200]}")
    status, answer = post(base, "/v1/workflows/intent", intent, 90)
    if status != 200:
        finding(f"a workflow after the chaos: {status} {str(answer)[:200]}")

    def used_blocks():
        total = 0.0
        for n in nodes:
            try:
                total += sum(v for label, v in metric_samples(http(f"http://127.0.0.1:{n.admin}/metrics")[1],
                                                              "recgpt_kv_blocks") if 'state="used"' in label)
            except OSError:
                return None
        return total

    settled = time.time()
    while used_blocks() != 0 and time.time() < settled + 60:
        time.sleep(0.5)
    left = used_blocks()
    if left is None:
        finding("a node's /metrics did not answer after the chaos")
    elif left != 0:
        finding(f"{left:.0f} KV blocks still used 60 s after the last request")
    running = sum(v for _, v in metric_samples(http(base + "/metrics")[1], "recgpt_router_requests_running"))
    if running != 0:
        finding(f"the router still counts {running} running requests")

    print(f"\noutcomes over {ARGS.seconds:.0f} s:")
    for kind, n in sorted(OUTCOMES.items()):
        print(f"  {n:7d}  {kind}")
    print(f"after the chaos: completions {dict(final)}, workflow {status}; KV blocks free "
          f"{time.time() - settled:.1f} s after the last request")
    for n in nodes:
        text = http(f"http://127.0.0.1:{n.admin}/metrics")[1]
        lapsed = metric_samples(text, "recgpt_decode_kv_fences_lapsed_total")
        if lapsed:
            ends = {label.split('end="')[1].split('"')[0]: int(v)
                    for label, v in metric_samples(text, "recgpt_decode_kv_stream_ends_total")}
            print(f"  {n.name}: {sum(v for _, v in lapsed):.0f} write fences lapsed at their deadline; KV streams "
                  f"ended {ends}")
    for p in processes:
        rss = next((line.split()[1] for line in open(f"/proc/{p.proc.pid}/status") if line.startswith("VmRSS")), "?")
        print(f"  {p.name}: started {p.starts} times, RSS {rss} kB")
    print(f"findings: {len(FINDINGS)}")
    for f in FINDINGS[:50]:
        print("  - " + f)
    for p in processes:
        p.expected_exit = True
        p.proc.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.proc.kill()
    return 1 if FINDINGS else 0


if __name__ == "__main__":
    sys.exit(main())
