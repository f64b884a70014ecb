#!/usr/bin/python3
"""The matmul kernels' inner loops keep their accumulators in registers.

Usage: check_kernel_loops.py OBJDUMP ENGINE_LIBRARY

Disassembles the engine library and, in every dot-form matmul kernel (`strip_rows<...>`: the AVX512_BF16 one
and the FMA ones), finds the innermost loops that do the multiply-adds (>= 8 `vdpbf16ps`/`vfmadd*ps` in a loop
that holds no other loop). Such a loop must not store a vector register to memory: a store there means the
compiler keeps the accumulators in memory, a silent 1.4-3x slowdown no functional test sees (GCC 12 did so once
a peel step was added; engine/cpu/matmul_strip_impl.inc, the `#pragma GCC unroll` on the per-row reduction).
Fails when a kernel has no such loop at all (the disassembly is not what this check understands).
"""
import re
import subprocess
import sys

FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
BACKWARD_JUMP = re.compile(r"^([0-9a-f]+) <")
MULTIPLY_ADD = re.compile(r"^(vdpbf16ps|vfmadd\d+ps)$")
VECTOR_STORE = re.compile(r"^%[xyz]mm\d+,.*\(")  # AT&T order: source register, then a memory destination
KERNELS = re.compile(r"strip_rows<")


def functions(disassembly):
    name, body = None, []
    for line in disassembly.splitlines():
        match = FUNCTION.match(line)
        if match:
            if name is not None:
                yield name, body
            name, body = match.group(1), []
            continue
        match = INSTRUCTION.match(line)
        if name is not None and match:
            body.append((int(match.group(1), 16), match.group(2), match.group(3)))
    if name is not None:
        yield name, body


def loops(body):
    """(start, end) address ranges of backward jumps: each is a loop's body."""
    ranges = []
    for address, mnemonic, operands in body:
        if mnemonic.startswith("j"):
            match = BACKWARD_JUMP.match(operands)
            if match and int(match.group(1), 16) < address:
                ranges.append((int(match.group(1), 16), address))
    return ranges


def check(disassembly):
    errors, checked = [], 0
    for name, body in functions(disassembly):
        if not KERNELS.search(name):
            continue
        ranges = loops(body)
        innermost = [r for r in ranges if not any(o != r and r[0] <= o[0] and o[1] <= r[1] for o in ranges)]
        compute = []
        for start, end in innermost:
            instructions = [(m, o) for a, m, o in body if start <= a <= end]
            if sum(bool(MULTIPLY_ADD.match(m)) for m, _ in instructions) >= 8:
                compute.append((start, instructions))
        if not compute:
            errors.append(f"{name}: no inner loop with >= 8 multiply-adds found")
        for start, instructions in compute:
            checked += 1
            stores = [f"{m} {o}" for m, o in instructions if m.startswith("vmov") and VECTOR_STORE.match(o)]
            if stores:
                errors.append(f"{name}: the loop at {start:#x} stores {len(stores)} vector registers per iteration, "
                              f"e.g. {stores[0]}")
    if checked == 0:
        errors.append("no matmul kernel loops found")
    return errors, checked


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    objdump, library = sys.argv[1:]
    disassembly = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", library], capture_output=True,
                                 text=True, check=True).stdout
    errors, checked = check(disassembly)
    for error in errors:
        print(f"FAIL: {error}")
    if not errors:
        print(f"kernel loops keep their accumulators in registers ({checked} loops checked)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
