"""How a training process ends, as the parent sees it: exit codes, their errors, the progress line prefix.

Reads and writes nothing. The child (``process.py``) exits with one of these codes; torchrun
reduces every failure to 1, so the child also writes the kind to ``exit-kind`` beside its spec.
"""

from __future__ import annotations

from tuneline.errors import TunelineError

EXIT_INPUT_ERROR = 2  # deterministic: bad config or data; retrying cannot help
EXIT_OUT_OF_MEMORY = 75  # CUDA OOM; the next attempt halves the per-device batch
EXIT_PREEMPTED = 143  # SIGTERM: a checkpoint was written before exiting
EXIT_KINDS = {"input": EXIT_INPUT_ERROR, "oom": EXIT_OUT_OF_MEMORY, "preempted": EXIT_PREEMPTED}
PROGRESS_PREFIX = "PROGRESS "  # a child's stdout line carrying JSON progress for the parent
PARENT_PID_ENV = "TUNELINE_PARENT_PID"  # the launching process: the child exits when it is gone
EXIT_ORPHANED = 70  # the launching process died: the child stops without writing anything more


class TrainingInputError(TunelineError):
    """The training process rejected its input (never retried)."""


class TrainingInterrupted(RuntimeError):
    """The training process was killed, preempted or timed out (retried; resumes from a checkpoint)."""


class TrainingTimedOut(TunelineError):
    """The run's training time budget (all attempts together) is spent: not retried; a new run resumes."""


class TrainingStopped(TunelineError):
    """The process was being stopped (SIGTERM): training checkpointed and ended, or did not start. Not retried:
    the process is going away; a new run resumes from the checkpoint."""


class OutOfMemory(RuntimeError):
    """CUDA ran out of memory (retried with half the per-device batch, same effective batch)."""
