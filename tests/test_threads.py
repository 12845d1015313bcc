"""A job's thread count is the preset's: a CPU run's numbers never depend on the machine's cores
or on how busy they are (benchmark/runtime/threads.py)."""
from __future__ import annotations


def test_the_preset_thread_count_wins_over_what_the_scheduler_grants():
    from benchmark.runtime.threads import job_threads

    assert job_threads({"threads": 1}, {"APBENCH_THREADS": "2"}) == 1
    assert job_threads({"threads": 4}, {"APBENCH_THREADS": "1"}) == 4
    assert job_threads({"threads": 1}, {}) == 1
    # a preset that sets none takes the grant, else torch's default
    assert job_threads({"threads": None}, {"APBENCH_THREADS": "3"}) == 3
    assert job_threads({}, {}) is None


def test_the_workflow_grants_pretraining_the_preset_threads_like_every_other_job():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "workflows" / "rules" / "common.smk").read_text()
    assert "PRETRAIN_THREADS = THREADS" in text
