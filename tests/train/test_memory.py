"""`reusing_freed_memory`: a freed large block is served again without page faults."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from sagefm.train.memory import reusing_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

MB = 1 << 20
PAGE = resource.getpagesize()


def _faults_of_second_allocation(n_bytes: int) -> int:
    """Minor page faults of writing a fresh ``n_bytes`` tensor after one of the same size was
    written and freed: the page-fault cost a training step pays per buffer. (torch, not NumPy:
    NumPy asks for transparent huge pages, which fault once per 2 MB.)"""
    first = torch.ones(n_bytes, dtype=torch.uint8)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.ones(n_bytes, dtype=torch.uint8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


@glibc
def test_freed_blocks_are_reused_inside_and_page_faulted_outside() -> None:
    size = 48 * MB  # over glibc's largest mmap threshold (32 MB), like the fp32 weight gradient
    pages = size // PAGE
    outside = _faults_of_second_allocation(size)
    with reusing_freed_memory() as applied:
        assert applied
        _faults_of_second_allocation(size)  # the heap grows to hold it once
        inside = _faults_of_second_allocation(size)
    after = _faults_of_second_allocation(size)
    assert outside > 0.9 * pages  # a fresh mmap: every page faults in again
    assert inside < 0.01 * pages  # the freed block is served again, already mapped
    assert after > 0.9 * pages  # the defaults are back


@glibc
def test_memory_is_handed_back_on_exit() -> None:
    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / MB

    with reusing_freed_memory():
        block = torch.ones(256 * MB, dtype=torch.uint8)
        del block
        kept = rss_mb()
    released = rss_mb()
    assert kept - released > 200  # the freed 256 MB stayed until exit, then went back


def test_disabled_changes_nothing() -> None:
    with reusing_freed_memory(enabled=False) as applied:
        assert not applied
