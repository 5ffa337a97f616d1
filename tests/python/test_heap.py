"""Note [Large blocks stay in the heap] (cpp/sbsconv/common/Heap.h): from the import of sbsconv's
native module on, blocks of frames' size are kept when freed, every thread's (LibTorch's large
blocks by sbsconv's wrapper of its CPU allocator, the rest in glibc's heap, one arena), so a
batch's blocks are not fresh (page-faulted, zeroed) memory again; a conversion hands the free
heap back when it ends; a user's own malloc settings stand.

Each case runs in a fresh process: the policy is a process's, set once."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the policy is glibc's malloc (elsewhere the C library's own is left alone)")

BLOCK = 96 << 20  # above glibc's largest dynamic mmap threshold (32 MB): mapped afresh by default
ROUNDS = 6
SETTLED = 3  # the last rounds: their blocks reuse the first rounds' memory (two of them at most:
# torch aligns its blocks, so a freed block is a little short of the next request's carve and the
# heap alternates between two places)

# Page faults of each of ROUNDS allocations of BLOCK bytes, written and freed (a batch's frames).
_FAULTS = f"""
import json, resource, sys, torch

def faults():
    rounds = []
    for _ in range({ROUNDS}):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty({BLOCK}, dtype=torch.uint8)
        block.fill_(1)
        del block
        rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return rounds

def faults_in_a_thread():
    # a stage thread's blocks (the engine's depth stage allocates its batches on its own thread)
    import threading
    out = []
    worker = threading.Thread(target=lambda: out.append(faults()))
    worker.start()
    worker.join()
    return out[0]

"""

PAGES = BLOCK // os.sysconf("SC_PAGE_SIZE")


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    """Runs code in a fresh process whose malloc settings are glibc's own, and `env`'s."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**base, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _faults_around_import(tiny_model, env=None) -> dict:
    return _run(_FAULTS + f"""
before = faults()
from sbsconv import models
after = faults()
model = models.load({str(tiny_model)!r}, device="cpu")
print(json.dumps({{"before": before, "after": after, "after_model": faults(),
                  "after_thread": faults_in_a_thread()}}))
""", env)


def _faults_in_a_thread_without_sbsconv() -> list[int]:
    return _run(_FAULTS + "print(json.dumps(faults_in_a_thread()))")


def _settled(rounds: list[int]) -> bool:
    """The first rounds' blocks are new memory, the later ones reuse them."""
    return sum(rounds) <= 2.2 * PAGES and sum(rounds[-SETTLED:]) <= 0.1 * PAGES


def test_importing_sbsconv_keeps_frame_sized_blocks_in_the_heap(tiny_model):
    got = _faults_around_import(tiny_model)
    # glibc's default: every round's block is new memory, every page of it a fault, on the main
    # thread and on another (whose own arena maps blocks above 64 MB afresh whatever the
    # thresholds; measured in a process of its own: an arena a thread took before the import
    # is kept, and passes to a thread started after it)
    baseline = _faults_in_a_thread_without_sbsconv()
    assert all(n >= 0.9 * PAGES for n in got["before"] + baseline), (got, baseline)
    # after the import, and after a model load as well
    for key in ("after", "after_model", "after_thread"):
        assert _settled(got[key]), (key, got)


def test_a_smaller_block_is_carved_from_a_larger_one_kept():
    # a kept 200 MB block does not fit a 100 MB request (more than a quarter to spare): it goes
    # back to malloc, which carves the smaller blocks from it instead of new memory
    got = _run(_FAULTS + f"""
import sbsconv._core

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * {os.sysconf("SC_PAGE_SIZE")}

large = torch.ones(2 * {BLOCK}, dtype=torch.uint8)
del large
kept = rss()
rounds = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones({BLOCK}, dtype=torch.uint8)
    del block
    rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"rounds": rounds, "growth": rss() - kept}}))
""")
    assert sum(got["rounds"]) <= 0.1 * PAGES, got
    assert got["growth"] <= BLOCK // 10, got


@pytest.mark.parametrize("env", [
    {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"},
    {"MALLOC_ARENA_MAX": "4"},
], ids=["GLIBC_TUNABLES", "MALLOC_ARENA_MAX"])
def test_malloc_settings_the_user_chose_are_left_alone(tiny_model, env):
    got = _faults_around_import(tiny_model, env)
    assert all(n >= 0.9 * PAGES for n in got["before"] + got["after"] + got["after_model"] + got["after_thread"]), got


def test_a_conversion_hands_the_free_heap_back(tiny_model, testsrc, tmp_path):
    clip = testsrc("heap_160x120.mp4")
    got = _run(f"""
import json, os, torch, sbsconv
from sbsconv import models

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

models.load({str(tiny_model)!r}, device="cpu")  # (the import applied the policy)
start = rss()
blocks = [torch.ones(64 << 20, dtype=torch.uint8) for _ in range(8)]  # 512 MB in the heap
del blocks
kept = rss()
sbsconv.convert({str(clip)!r}, {str(tmp_path / "out.mp4")!r}, model={str(tiny_model)!r}, device="cpu",
                progress=False)
print(json.dumps({{"start": start, "kept": kept, "after": rss()}}))
""")
    mb = 1 << 20
    # the freed blocks stay with the process while it converts ...
    assert got["kept"] - got["start"] >= 400 * mb, got
    # ... and the conversion's end returns them (and its own) to the system
    assert got["after"] - got["start"] <= 200 * mb, got
