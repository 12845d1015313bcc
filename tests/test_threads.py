"""The lone pretraining of a local run takes every core only while the cores are idle."""
from __future__ import annotations


def test_a_lone_job_takes_its_extra_threads_only_while_their_cores_are_idle(monkeypatch):
    from benchmark.runtime.threads import job_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    runtime = {"threads": 1}
    granted = {"APBENCH_THREADS": "2"}
    assert job_threads(runtime, granted, busy=0.1) == 2
    # another process keeps a core busy: two threads would wait on it at every operation
    assert job_threads(runtime, granted, busy=1.0) == 1
    assert job_threads(runtime, granted, busy=None) == 2  # no /proc/stat: as granted
    # what the preset asks for is never refused
    assert job_threads({"threads": 2}, granted, busy=5.0) == 2
    assert job_threads(runtime, {}, busy=5.0) == 1
