"""Entry point of the training child process: ``python -m tuneline.training.process SPEC.json``.

Reads the spec the parent wrote (config, prepared splits, storage root, prefix);
trains (see ``tuneline.training.loop.fine_tune``) and exits with a code the parent maps
to a retry decision. Writes ``error.txt`` beside the spec on failure (``error-rank<N>.txt`` from rank N > 0
under torchrun) and the failure's kind to ``exit-kind``; an input error in any rank also goes to
``input-error.txt`` (the first only), because the other ranks then fail too, with errors that only say a
peer went away.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from tuneline.errors import TunelineError
from tuneline.training.loop import fine_tune
from tuneline.training.outcomes import (EXIT_INPUT_ERROR, EXIT_ORPHANED, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED,
                                        PARENT_PID_ENV)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, IndexError):
        return True


def exit_with_the_launcher(poll_s: float = 0.5) -> None:
    """A child never outlives the process that launched it (the flow, also through torchrun): when that
    process is gone, stop at once, before another checkpoint is published or pruned."""
    launcher, parent = int(os.environ.get(PARENT_PID_ENV, "0")), os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent or (launcher and not alive(launcher)):
                print("the launching process is gone: stopping without writing anything more", flush=True)
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="launcher-watchdog", daemon=True).start()


def main(spec_path: str) -> int:
    exit_with_the_launcher()
    spec_file = Path(spec_path)
    rank = os.environ.get("RANK", "0")
    error = spec_file.with_name("error.txt" if rank == "0" else f"error-rank{rank}.txt")
    kind = spec_file.with_name("exit-kind")  # read by the parent when torchrun reduces every failure to 1
    try:
        result = fine_tune(json.loads(spec_file.read_text()))
    except TunelineError as err:
        error.write_text(str(err))
        try:
            with spec_file.with_name("input-error.txt").open("x") as first:
                first.write(str(err))
        except FileExistsError:
            pass
        kind.write_text("input")
        return EXIT_INPUT_ERROR
    except Exception as err:
        import torch

        error.write_text(f"{type(err).__name__}: {err}")
        if isinstance(err, torch.OutOfMemoryError):
            print(f"out of memory: {err}", flush=True)  # into train.log too, not only the error
            kind.write_text("oom")
            return EXIT_OUT_OF_MEMORY
        traceback.print_exc()
        return 1
    if result.get("preempted"):
        kind.write_text("preempted")
        return EXIT_PREEMPTED
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
