#!/usr/bin/python3
"""The container image's runtime package list covers every shared library the built binary loads.

Usage: check_runtime_packages.py RECGPT_BINARY deploy/container/runtime-packages.txt
Each library `ldd` resolves is traced to its Debian package with `dpkg -S`; every such package must be in the
list (libraries under /usr/local/cuda come with the CUDA base image and are skipped, named). A library ldd cannot
resolve, or one no package owns, fails the check.
"""
import os
import subprocess
import sys


def owner(path):
    candidates = [path, os.path.realpath(path)]
    for candidate in list(candidates):  # Debian 12 merged /lib into /usr/lib; dpkg knows either spelling
        if candidate.startswith("/usr/lib/"):
            candidates.append(candidate[len("/usr"):])
        elif candidate.startswith("/lib/"):
            candidates.append("/usr" + candidate)
    for candidate in candidates:
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0].strip()
    return None


def main():
    binary, listing = sys.argv[1], sys.argv[2]
    with open(listing) as f:
        listed = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    failures, needed, skipped = [], set(), []
    for line in ldd.splitlines():
        parts = line.split()
        if "=>" not in parts:
            continue
        library, path = parts[0], parts[parts.index("=>") + 1]
        if path == "not":
            failures.append(f"{library}: ldd cannot find it")
            continue
        if path.startswith("/usr/local/cuda"):
            skipped.append(library)
            continue
        package = owner(path)
        if package is None:
            failures.append(f"{library} ({path}): no Debian package owns it")
            continue
        needed.add(package)
        if package not in listed:
            failures.append(f"{library} comes from {package}, which {listing} does not list")
    for failure in failures:
        print("FAILED", failure)
    print(f"packages needed: {sorted(needed)}; from the CUDA image: {skipped or 'none'}")
    if failures:
        sys.exit(1)
    print("PASS: the runtime package list covers the binary")


if __name__ == "__main__":
    main()
