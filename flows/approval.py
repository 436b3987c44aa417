"""A person approves or rejects a promotion (``evaluation.approval: required``): the run pauses until then.

The register stage has registered the winning candidate without promoting it. The flow run pauses
(Prefect ``pause_flow_run`` with ``wait_for_input``): its page in the UI gets a Resume button whose form
(``PromotionDecision``: approve, decided by, comment) sits under the test metrics beside the champion's.
Resumed, the promote stage applies the decision (``tuneline.stages.register.decide_promotion``): approved ->
the compare-and-swap promotion, with who, when and why in the alias history; rejected -> registered only.

No decision within ``evaluation.approval_timeout_hours``: the run resumes itself with a rejection and the
version stays unpromoted, reported as ``timed_out``. Prefect fails a run whose own pause deadline passes (a
paused run may not move on after it), so that deadline is set ``GRACE_S`` later than ours.

Through the API instead of the UI::

    from prefect.flow_runs import resume_flow_run
    resume_flow_run(flow_run_id, run_input={"approve": True, "decided_by": "ana", "comment": "errors checked"})
"""

from __future__ import annotations

import contextvars
import threading
from datetime import datetime, timedelta, timezone

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from flows.stages import StageLog
from tasks.promote import promote
from tuneline.config import FinetuneConfig
from tuneline.metrics import headline
from tuneline.results import Evaluation, Registered
from tuneline.stages.register import APPROVED, REJECTED, TIMED_OUT

GRACE_S = 60  # Prefect's pause deadline comes this long after ours: our own timeout always resumes the run first
TIMEOUT_DECIDER = "tuneline (approval timeout)"


class PromotionDecision(RunInput):
    """Promote the registered version to the champion alias?"""

    approve: bool = Field(False, description="On: approve, the version becomes the champion. Off: reject, it "
                                             "stays registered and is not promoted.")
    decided_by: str = Field(min_length=1, max_length=200,
                            description="Who decides (name or e-mail): kept in the alias history.")
    comment: str = Field("", max_length=2000, description="Why: kept in the alias history.")


def ask_approval(stages: StageLog, config: FinetuneConfig, evaluation: Evaluation,
                 registered: Registered) -> Registered:
    """Pause for a person's decision on the pending promotion, then apply it (the promote stage)."""
    decision = await_decision(config, evaluation, registered)
    return stages.run(promote, config, evaluation, registered, decision)


def await_decision(config: FinetuneConfig, evaluation: Evaluation, registered: Registered) -> dict:
    """``{"status": approved | rejected | timed_out, "decided_by", "decided_at", "comment"}``."""
    timeout_s = max(1, round(config.evaluation.approval_timeout_hours * 3600))
    deadline = datetime.now(timezone.utc) + timedelta(seconds=timeout_s)
    form = PromotionDecision.with_initial_data(description=decision_page(config, evaluation, registered, deadline))
    get_run_logger().warning("%s version %s awaits approval: open this flow run in the Prefect UI and press Resume "
                             "(by %s, else it is not promoted)", config.name, registered.version, iso(deadline))
    with Deadline(timeout_s) as expiry:
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=timeout_s + GRACE_S, key="approval",
                                    poll_interval=min(10.0, max(1.0, timeout_s / 100)))
        except FlowPauseTimeout:  # our own resume failed (the API was unreachable then): the run will fail
            answer = None
    if answer is None or expiry.resumed:
        return {"status": TIMED_OUT, "decided_by": None, "decided_at": iso(deadline),
                "comment": f"no decision within {config.evaluation.approval_timeout_hours:g} h"}
    return {"status": APPROVED if answer.approve else REJECTED, "decided_by": answer.decided_by.strip(),
            "decided_at": resumed_at(), "comment": answer.comment.strip()}


class Deadline:
    """Resumes the paused flow run with a rejection once ``timeout_s`` have passed, unless someone resumed it
    first (a thread; ``resumed`` says whether it did). A person and the deadline resuming at the same moment:
    the server accepts one resume, the other gets "not paused"."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.flow_run_id = flow_run.get_id()
        self.resumed = False
        self.done = threading.Event()
        context = contextvars.copy_context()  # the flow run's Prefect settings (API URL) and run context
        self.thread = threading.Thread(target=context.run, args=(self.wait,), name="approval-deadline", daemon=True)

    def __enter__(self) -> Deadline:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def wait(self) -> None:
        if self.done.wait(self.timeout_s):
            return
        from prefect.flow_runs import resume_flow_run

        try:
            resume_flow_run(self.flow_run_id, run_input={"approve": False, "decided_by": TIMEOUT_DECIDER,
                                                          "comment": "no decision in time"})
            self.resumed = True
        except Exception as err:  # resumed by a person just now, or the API is away (then Prefect's deadline)
            get_run_logger().info("approval deadline: the run was not resumed by tuneline (%s)", err)


def resumed_at() -> str:
    """When the run was resumed: the server's time of its Running state (now, if unknown)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.get_id()).state
    stamp = getattr(state, "timestamp", None) if state and state.is_running() else None
    return iso(stamp or datetime.now(timezone.utc))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def decision_page(config: FinetuneConfig, evaluation: Evaluation, registered: Registered, deadline: datetime) -> str:
    """The markdown above the form: the proposal, the test metrics beside the champion's, what each answer does."""
    gate, alias = evaluation.gate, config.evaluation.champion_alias
    champion = gate["champion"]["version"] if gate.get("champion") else None
    theirs = evaluation.champion_metrics or {}
    rows = [f"| {name} | {value:.4f} | " + (f"{theirs[name]:.4f}" if name in theirs else "-") + " |"
            for name, value in headline(evaluation.metrics).items() if isinstance(value, float)]
    return "\n".join([
        f"### Promote `{config.name}` version {registered.version} to `{alias}`?", "",
        f"The gate proposes it: {gate['reason']}. Test split metrics (also in the `{config.name}-metrics` "
        "artifact of this run):", "",
        f"| metric | version {registered.version} | " + (f"champion v{champion}" if champion else "no champion") + " |",
        "|---|---|---|", *rows, "",
        f"**Approve**: `{config.name}@{alias}` moves to version {registered.version}"
        + (f" if it still points at version {champion}" if champion else " if no one set it meanwhile")
        + ". **Reject**: the version stays registered, not promoted. "
        f"No decision by {deadline.strftime('%Y-%m-%d %H:%M')} UTC: not promoted. Who decides, when and why go "
        "into the alias history.",
    ])
