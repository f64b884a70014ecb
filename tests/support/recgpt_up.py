"""A local cluster (`recgpt up`: a prefill and a decode process and the router, on 127.0.0.1) for Python tests,
started with a deadline and stopped whatever happens, and free loopback ports.

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
    from recgpt_up import ClusterError, start_cluster, stop_cluster
"""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

STARTUP_SECONDS = 60


class ClusterError(Exception):
    pass


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster(recgpt, model_dir, log_path, startup_seconds=STARTUP_SECONDS):
    """(process, base URL ending in /v1) once /readyz answers 200; ClusterError otherwise, the process stopped."""
    log = open(log_path, "w")
    process = subprocess.Popen(
        [recgpt, "up", "--model", model_dir, "--port", "0", "--prefill", "1", "--decode", "1", "--kv-cache-mib", "32",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        return process, wait_ready(process, log_path, startup_seconds)
    except ClusterError:
        stop_cluster(process)
        raise


def wait_ready(process, log_path, startup_seconds):
    deadline = time.monotonic() + startup_seconds
    line = process.stdout.readline()  # "recgpt up: serving http://127.0.0.1:PORT/v1 ..."
    if "serving http://" not in line:
        raise ClusterError(f"recgpt up printed {line!r} first (log: {log_path})")
    base = line.split("serving ")[1].split()[0].rstrip("/")
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base.replace("/v1", "/readyz"), timeout=2) as answer:
                if answer.status == 200:
                    return base
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None:
            raise ClusterError(f"recgpt up exited with {process.returncode} (log: {log_path})")
        time.sleep(0.2)
    raise ClusterError(f"the router was not ready within {startup_seconds} s (log: {log_path})")


def stop_cluster(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
