"""Expected failures: the errors a user can fix, as opposed to bugs.

The command line prints a ``UserError`` as one message (no traceback unless ``--debug`` or
``APBENCH_DEBUG=1``) and exits with ``exit_code``; any other exception is a bug and keeps its
traceback. Library code raises these for bad input so that every caller, not only the CLI, can tell
the two apart. The messages name the field or file and the remedy.

Each class also derives from the builtin a caller would have caught before (``ValueError``,
``FileNotFoundError``), so code written against the builtins keeps working.

This module imports nothing heavy: the Snakefile and the config checks use it without torch.
"""
from __future__ import annotations

import signal

#: set to 1 to print the traceback of expected failures too (what ``--debug`` does); Snakemake jobs
#: inherit it from the environment of the ``snakemake`` command
DEBUG_ENV = "APBENCH_DEBUG"


class UserError(Exception):
    """A failure caused by the input (config, files, machine), fixable without changing the code."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config value, command-line option or name that is not valid."""


class MachineError(UserError, RuntimeError):
    """The config asks for something this machine lacks (a CUDA device, a folder)."""


class OutputWriteError(UserError, OSError):
    """An output cannot be written (a read-only folder, a full disk); nothing partial is left."""


class InputFileError(UserError):
    """A file a command reads is missing or unusable."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A file a command needs does not exist."""


class CorruptFileError(InputFileError, ValueError):
    """A file exists but its content is not what the suite wrote (truncated, edited, wrong kind)."""


class CheckpointError(CorruptFileError):
    """A model or resume checkpoint that cannot be loaded safely, or that does not fit the model."""


class DatasetError(UserError):
    """A dataset's files are missing or do not match their recorded sizes and hashes."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not on disk; the message says where we looked and how to get them."""


class DatasetCorruptError(DatasetError, ValueError):
    """A dataset file differs from the published one, or holds labels outside the class range."""


class Interrupted(BaseException):
    """The job was asked to stop (SIGTERM, SIGINT) and stopped at a safe point.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way up mistakes
    a requested stop for an error to handle. The exit status is the shell's 128 + signal number.
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
