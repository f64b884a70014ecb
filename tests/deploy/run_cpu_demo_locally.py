#!/usr/bin/python3
"""The cpu-demo overlay's pods, run as local processes with exactly the arguments and environment the rendered
manifests give them, answer the intent workflow.

Usage: run_cpu_demo_locally.py KUBECTL RECGPT_BINARY OVERLAY_DIR EXAMPLE_REQUEST WORK_DIR

Renders the overlay with kubectl kustomize, then, per Deployment, runs its init containers (each pod makes the
built-in model into its own folder, as its emptyDir) and starts its container. Only what Kubernetes itself would
provide is substituted: $(VAR) from the container's env (the downward API's pod name), the volume's mount path by
the pod's folder, the pod's own network (0.0.0.0) and the Services' DNS names by 127.0.0.1, and the fixed ports by
free ones (the same mapping for every argument). Checks: every pod made byte-identical model files (the demo relies on it), the router becomes
ready, POST /v1/workflows/intent with the example request answers 200 with final tags, and each process's peak
resident memory stayed below its container's memory limit. Every process is
stopped whatever happens; every wait has a deadline.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from recgpt_up import free_port  # noqa: E402

STARTUP_SECONDS = 90
REQUEST_SECONDS = 120


class Failed(Exception):
    pass


def folder_digest(path):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        digest.update(name.encode())
        with open(os.path.join(path, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise Failed(f"no VmHWM for pid {pid}")


def quantity_bytes(quantity):
    """A Kubernetes memory quantity (e.g. 512Mi, 1Gi) in bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(quantity))
    if not match:
        raise Failed(f"unexpected memory quantity {quantity}")
    return int(match.group(1)) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[match.group(2)]


def localize(args, env, mount, pod_dir, hosts, ports):
    """The container's arguments with what Kubernetes would provide replaced by its local stand-in."""
    out = []
    for arg in args:
        arg = re.sub(r"\$\(([A-Z_]+)\)", lambda m: env[m.group(1)], arg)
        arg = arg.replace(mount, pod_dir).replace("--listen=0.0.0.0", "--listen=127.0.0.1")  # the pod's network
        for host in hosts:
            arg = arg.replace(f"{host}:", "127.0.0.1:")
        arg = re.sub(r"(?<=[=:])(\d{4,5})$", lambda m: str(ports.get(int(m.group(1)), m.group(1))), arg)
        out.append(arg)
    return out


def main():
    kubectl, recgpt, overlay, request_path, work_dir = sys.argv[1:6]
    os.makedirs(work_dir, exist_ok=True)
    rendered = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True, check=True).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    fixed_ports = {p["containerPort"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]
                   for p in c.get("ports", [])}
    ports = {port: free_port() for port in fixed_ports}
    children = []
    try:
        digests = {}
        plans = []
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            pod = deployment["spec"]["template"]["spec"]
            pod_dir = os.path.join(work_dir, name)
            os.makedirs(pod_dir, exist_ok=True)
            model_mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])
                            if m["name"] == "model"}
            (mount,) = model_mounts
            for init in pod.get("initContainers", []):
                args = localize(init["args"], {}, mount, os.path.join(pod_dir, "model"), services, ports)
                subprocess.run([recgpt, *args], check=True, capture_output=True, timeout=STARTUP_SECONDS)
            digests[name] = folder_digest(os.path.join(pod_dir, "model"))
            (container,) = pod["containers"]
            env = {"POD_NAME": f"{name}-0"}
            for variable in container.get("env", []):
                if "value" in variable:
                    env[variable["name"]] = variable["value"]
            args = localize(container["args"], env, mount, os.path.join(pod_dir, "model"), services, ports)
            limit = container.get("resources", {}).get("limits", {}).get("memory")
            plans.append((name, args, env, limit))
        if len(set(digests.values())) != 1:
            raise Failed(f"the pods made different model files: {digests}")
        print(f"{len(digests)} pods made the same model files")
        order = sorted(plans, key=lambda plan: plan[1][0] == "router")  # nodes first, the router last
        for name, args, env, _ in order:
            log = open(os.path.join(work_dir, f"{name}.log"), "w")
            children.append(subprocess.Popen([recgpt, *args], stdout=log, stderr=log, start_new_session=True,
                                              env=dict(os.environ, **{k: v for k, v in env.items()
                                                                      if k != "POD_NAME"})))
            print(f"started {name}: recgpt {' '.join(args)}")
        router_port = ports[8000]
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{router_port}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except Exception as error:  # not up yet
                last = error
            if any(child.poll() is not None for child in children):
                raise Failed("a pod's process exited during startup (see the logs in the work folder)")
            if time.monotonic() > deadline:
                raise Failed(f"the router was not ready within {STARTUP_SECONDS} s: {last}")
            time.sleep(0.5)
        with open(request_path, "rb") as f:
            body = f.read()
        request = urllib.request.Request(f"http://127.0.0.1:{router_port}/v1/workflows/intent", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
            status, answer = response.status, json.loads(response.read())
        final_tags = answer.get("output", {}).get("final_tags")
        if status != 200 or not final_tags:
            raise Failed(f"the intent workflow answered {status}: {json.dumps(answer)[:500]}")
        for (name, _, _, limit), child in zip(order, children):
            peak = peak_rss_bytes(child.pid)
            if limit is None or peak >= quantity_bytes(limit):
                raise Failed(f"{name} peaked at {peak / 2**20:.0f} MiB, its memory limit is {limit}")
            print(f"{name}: peak RSS {peak / 2**20:.0f} MiB within its limit {limit}")
        print(f"PASS: the cpu-demo pods answered the intent workflow, final tags {final_tags}")
    except (Failed, subprocess.CalledProcessError, urllib.error.URLError) as error:
        print(f"FAILED: {error}")
        sys.exit(1)
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


if __name__ == "__main__":
    main()
