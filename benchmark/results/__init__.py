"""From result files to leaderboards: reading and checking them, the statistics, the flags, the
reference and published columns, markdown and CSV tables, plots, paper tables.

``benchmark.results`` was the result file's module before the subpackages (now
``benchmark.core.result_file``, since the evaluation stage writes it): ``from benchmark.results
import read_result`` keeps working.
"""
from benchmark.core import result_file as _result_file


def __getattr__(name: str):
    return getattr(_result_file, name)
