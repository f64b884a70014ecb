#!/usr/bin/python3
"""KV transfer bandwidth between two processes of this machine, next to ucx_perftest on the same transport and
sizes, in one run (issue 3's acceptance 4). For each transport and size:

  ucx_perftest tag_bw and ucp_put_bw (server and client pinned to different cores), the best of the two, with
  its default endpoints and with `-e` (peer failure detection, which ours need to fail a dead peer's transfers:
  over tcp UCX 1.13 then gives up its zero-copy rendezvous, as it does for ours);
  recgpt bench transfer: the same block written repeatedly (perftest's work: cache-resident buffers), then a
  KV-like mapping over 256 MiB regions, one op per block and the coalesced ops of runs of 16 adjacent blocks.

Both sides are pinned alike (core 0 writes, core 1 receives) and measured in turns (--rounds, best of each).
Prints a table (and --json writes every figure): ours repeated / perftest's best, and coalesced / per block.

  /usr/bin/python3 bench/transfer_bench.py --recgpt build/ci/recgpt [--tls tcp,sm] [--sizes 4096,65536,1048576]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

PORT = 13371
TOTAL_BYTES = 256 << 20


def perftest(test, size, tls, error_handling=False):
    """Bytes/s of ucx_perftest `test` at message `size` over `tls`, or None when it cannot run. With
    `error_handling`, its endpoints ask for peer failure detection (`-e`), as ours do where UCX allows it."""
    iterations = max(1000, min(100000, TOTAL_BYTES // size))
    env = dict(os.environ, UCX_TLS=tls)
    common = ["-t", test, "-s", str(size), "-n", str(iterations), "-w", str(max(100, iterations // 10)),
              "-p", str(PORT)] + (["-e"] if error_handling else [])
    server = subprocess.Popen(["taskset", "-c", "0", "ucx_perftest"] + common, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        client = subprocess.run(["taskset", "-c", "1", "ucx_perftest", "127.0.0.1"] + common, env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    match = re.search(r"^Final:\s+(\S+\s+){5}(\S+)", client.stdout, re.MULTILINE)
    if client.returncode != 0 or match is None:
        return None
    return float(match.group(2)) * (1 << 20)  # "MB/s" of ucx_perftest are MiB/s (overall column)


def ours(recgpt, tls, sizes):
    """{(block bytes, pattern): bytes/s}; the writer pinned to core 0 and its peer to core 1, as perftest's."""
    command = [recgpt, "bench", "transfer", "--backend", "ucx", "--tls", tls, "--block-bytes",
               ",".join(str(s) for s in sizes), "--bytes-per-run", str(TOTAL_BYTES), "--writer-cpu", "0",
               "--peer-cpu", "1", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"recgpt bench transfer failed ({result.returncode}): {result.stderr[-2000:]}")
    figures = json.loads(result.stdout)["figures"]
    return {(f["block_bytes"], f["pattern"]): f["bytes_per_second"] for f in figures}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recgpt", required=True)
    parser.add_argument("--tls", default="tcp,sm")
    parser.add_argument("--sizes", default="4096,65536,1048576,16777216")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds in turns (perftest then ours, every size); each figure keeps its best")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    best = lambda values: max((v for v in values if v is not None), default=None)
    rows = []
    for tls in args.tls.split(","):
        # In turns, so that both see the same phases of a noisy host.
        tests = [(test, error_handling) for error_handling in (False, True) for test in ("tag_bw", "ucp_put_bw")]
        perf = {(test, error_handling, size): [] for test, error_handling in tests for size in sizes}
        runs = []
        for _ in range(args.rounds):
            for size in sizes:
                for test, error_handling in tests:
                    perf[(test, error_handling, size)].append(perftest(test, size, tls, error_handling))
            runs.append(ours(args.recgpt, tls, sizes))
        measured = {key: max(run[key] for run in runs) for key in runs[0]}
        for size in sizes:
            tag, put = best(perf[("tag_bw", False, size)]), best(perf[("ucp_put_bw", False, size)])
            tag_e, put_e = best(perf[("tag_bw", True, size)]), best(perf[("ucp_put_bw", True, size)])
            top = max(v for v in (tag, put, 0.0) if v is not None)
            top_e = max(v for v in (tag_e, put_e, 0.0) if v is not None)
            repeated = measured[(size, "repeated")]
            per_block, coalesced = measured[(size, "per_block")], measured[(size, "coalesced")]
            rows.append({"tls": tls, "bytes": size, "perftest_tag_bw": tag, "perftest_ucp_put_bw": put,
                         "perftest_e_tag_bw": tag_e, "perftest_e_ucp_put_bw": put_e,
                         "ours_repeated": repeated, "ours_per_block": per_block, "ours_coalesced": coalesced,
                         "ours_repeated_over_perftest_best": repeated / top if top else None,
                         "ours_repeated_over_perftest_e_best": repeated / top_e if top_e else None,
                         "coalesced_over_per_block": coalesced / per_block})
    gb = lambda v: "   -  " if v is None else f"{v / 1e9:6.2f}"
    print("same work as ucx_perftest (one block written repeatedly), then a KV-like mapping over 256 MiB regions")
    print("perftest -e: its endpoints ask for peer failure detection, as ours do (UCX cannot over shared memory)")
    print(f"{'tls':<5} {'bytes':>9} {'tag_bw':>7} {'put_bw':>7} {'-e tag':>7} {'-e put':>7} {'ours':>7} "
          f"{'ours/best':>9} {'ours/best -e':>12} | {'per_block':>9} {'coalesced':>9} {'coal/block':>10}   (GB/s)")
    ratio = lambda v: "        -" if v is None else f"{v:9.2f}"
    for row in rows:
        print(f"{row['tls']:<5} {row['bytes']:>9} {gb(row['perftest_tag_bw']):>7} {gb(row['perftest_ucp_put_bw']):>7} "
              f"{gb(row['perftest_e_tag_bw']):>7} {gb(row['perftest_e_ucp_put_bw']):>7} {gb(row['ours_repeated']):>7} "
              f"{ratio(row['ours_repeated_over_perftest_best'])} {ratio(row['ours_repeated_over_perftest_e_best']):>12} | "
              f"{gb(row['ours_per_block']):>9} {gb(row['ours_coalesced']):>9} {row['coalesced_over_per_block']:10.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
