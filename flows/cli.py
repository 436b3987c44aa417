"""The ``tuneline`` command: run the flows locally and inspect the model registry.

It lives beside the flows it runs (the core library, ``tuneline/``, never imports Prefect).

Reads a YAML config (run), the storage root (models) or labelled data (evaluate); prints results to stdout,
logs to stderr. Errors are one paragraph on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import sys
from pathlib import Path

from tuneline.storage import DEFAULT_STORAGE, storage_root_or_default
from tuneline.errors import ConfigError, GateFailed, TunelineError, redact_urls

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneline", description="Fine-tune transformer models with Prefect flows.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the finetune flow locally on a config file")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value (repeatable), e.g. --set training.epochs=1")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON on the last line")

    sweep = commands.add_parser("sweep", help="train one trial per grid point; register the best by validation")
    sweep.add_argument("config", help="YAML config file (the base every trial starts from)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY.PATH=V1,V2,...",
                       help="values to try for a key (repeatable: every combination runs)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a base config value (repeatable)")
    sweep.add_argument("--max-concurrent", type=int, default=1, help="trials running at once (default 1)")
    sweep.add_argument("--json", action="store_true", help="print the sweep summary as JSON on the last line")

    evaluate = commands.add_parser("evaluate", help="score registered versions on new labelled data, side by side")
    evaluate.add_argument("refs", nargs="+", metavar="REF", help="NAME, NAME:VERSION or NAME@ALIAS (one or more)")
    evaluate.add_argument("data", help="labelled data: a file or folder (CSV, TSV, JSONL, Parquet, CoNLL) or s3://")
    evaluate.add_argument("--storage", help=f"storage root (default: $TUNELINE_STORAGE or {DEFAULT_STORAGE})")
    evaluate.add_argument("--json", action="store_true", help="print the comparison as JSON")

    predict = commands.add_parser("predict", help="predict every row of a data file with a registered version")
    predict.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    predict.add_argument("data", help="rows to predict: a file (CSV, TSV, JSONL, Parquet, CoNLL), local or s3://")
    predict.add_argument("--out", required=True,
                         help="output file, local or s3:// (.csv, .tsv, .jsonl, .parquet): the rows plus predictions")
    predict.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default 32)")
    predict.add_argument("--text-column", help="read the input text (token lists, prompts) from this column "
                         "instead of the one the model was trained with")
    predict.add_argument("--text-pair-column", help="read the second text of a pair from this column")
    predict.add_argument("--max-new-tokens", type=int,
                         help="causal_lm: answer length limit (default: the version's evaluation.max_new_tokens)")
    predict.add_argument("--data-format", default="auto", choices=["auto", "csv", "tsv", "jsonl", "parquet", "conll"],
                         help="DATA's format, for a file without its extension (default: by extension)")
    predict.add_argument("--storage", help=f"storage root (default: $TUNELINE_STORAGE or {DEFAULT_STORAGE})")

    models = commands.add_parser("models", help="inspect and fetch registered models")
    models.add_argument("--storage", help=f"storage root (default: $TUNELINE_STORAGE or {DEFAULT_STORAGE})")
    verbs = models.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="list models, or the versions of one model")
    listing.add_argument("name", nargs="?")
    show = verbs.add_parser("show", help="print a version's manifest, plus its evaluations on other data")
    show.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    pull = verbs.add_parser("pull", help="download a version and verify its checksums")
    pull.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    pull.add_argument("dest", help="destination folder (must not exist or be empty)")
    push = verbs.add_parser("push", help="register a model folder trained elsewhere")
    push.add_argument("folder", help="a save_pretrained folder (safetensors)")
    push.add_argument("name")
    push.add_argument("--alias", help="also point this alias at the new version")
    promote = verbs.add_parser("promote", help="point an alias at a version")
    promote.add_argument("ref", help="NAME:VERSION")
    promote.add_argument("alias")
    return parser


def drop_tracebacks(record: logging.LogRecord) -> bool:
    """Console log filter: keep the message, drop the traceback (the CLI prints one paragraph)."""
    record.exc_info, record.exc_text = None, None
    return True


def quiet_console_tracebacks() -> None:
    if os.environ.get("TUNELINE_DEBUG"):
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.addFilter(drop_tracebacks)


def command_run(args) -> int:
    from tuneline.config import load_config

    config = load_config(args.config, args.overrides)
    from flows.finetune import finetune

    summary = run_reported(lambda: finetune(config=config), args)
    if not args.json:
        print_summary(summary)
    return 0


def run_reported(run_flow, args) -> dict:
    """Run a flow with a quiet console; with --json print its summary last, also for a failed gate."""
    quiet_console_tracebacks()
    last_line = LastLine()
    try:
        summary = run_flow()
    except GateFailed as failure:
        if args.json and failure.summary:
            last_line.print(json.dumps(failure.summary))
        raise
    if args.json:
        last_line.print(json.dumps(summary))
    return summary


class LastLine:
    """Print a line as the very last output: with Prefect's temporary server (no PREFECT_API_URL), only at exit,
    after the server's "Stopping temporary server" line (exit handlers run in reverse order, and this one is
    registered before the flow starts the server), so ``2>&1 | tail -1`` gets it."""

    def __init__(self):
        from prefect.settings import PREFECT_API_URL

        self.deferred = not PREFECT_API_URL.value()
        self.text: str | None = None
        if self.deferred:
            atexit.register(self.flush)

    def print(self, text: str) -> None:
        self.text = text
        if not self.deferred:
            self.flush()

    def flush(self) -> None:
        if self.text is not None:
            print(self.text, flush=True)
            self.text = None


def print_summary(summary: dict) -> None:
    print(f"model    {summary['model']} version {summary['version']}")
    print(f"uri      {summary['uri']}")
    gate = summary["gate"]
    print(f"gate     {gate['decision']}: {gate['reason']}")
    if summary.get("alias"):
        print(f"alias    {summary['model']}@{summary['alias']} -> version {summary['version']}")
    if summary.get("approval"):  # evaluation.approval: required
        approval = summary["approval"]
        print(f"approval {approval['status']}" + (f" by {approval['decided_by']}" if approval.get("decided_by") else "")
              + (f": {approval['comment']}" if approval.get("comment") else ""))
    print("metrics  " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in summary["metrics"].items()))
    print("stages   " + ", ".join(f"{k} {v['status']} {v['seconds']}s" for k, v in summary["stages"].items()))


def command_sweep(args) -> int:
    from tuneline.config import load_config
    from tuneline.stages.sweep import expand_grid, parse_grid, trial_config

    config = load_config(args.config, args.overrides)
    grid = parse_grid(args.grid)
    for trial, point in enumerate(expand_grid(grid)):  # a bad grid value fails here, before any flow run
        trial_config(config, point, trial)
    if args.max_concurrent < 1:
        raise ConfigError("--max-concurrent: must be at least 1")
    from flows.sweep import sweep

    summary = run_reported(lambda: sweep(config=config, grid=grid, max_concurrent=args.max_concurrent), args)
    if args.json:
        return 0
    sweep_info = summary["sweep"]
    print(f"trials   ({sweep_info['validation_metric']} on the validation split, "
          f"{'lower' if sweep_info['lower_is_better'] else 'higher'} is better)")
    for trial in summary["trials"]:
        mark = "*" if trial["trial"] == sweep_info["best_trial"] else " "
        score = f"{trial['validation']:.4f}" if trial.get("validation") is not None else trial.get("error", "failed")
        print(f"  {mark} {trial['trial']}  {json.dumps(trial['parameters'])}  {score}")
    print_summary(summary)
    return 0


def command_models(args) -> int:
    from tuneline.registry import Registry
    from tuneline.storage import open_storage

    registry = Registry(open_storage(storage_root_or_default(args.storage)))
    if args.verb == "list":
        names = [args.name] if args.name else registry.names()
        for name in names:
            versions = registry.versions(name)
            if args.name and not versions:
                raise TunelineError(f"model {name!r} has no registered versions")
            aliases = registry.aliases(name)
            for version in versions:
                manifest = registry.manifest(name, version)
                gate = manifest.get("gate") or {}
                score = f"{gate['metric']}={gate['value']:.4f}" if gate else "-"
                tags = ",".join(a for a, v in sorted(aliases.items()) if v == version) or "-"
                print(f"{name}:{version}\t{tags}\t{score}\t{manifest.get('registered_at', '')}\t{manifest['uri']}")
    elif args.verb == "show":
        name, version = registry.resolve(args.ref)
        evaluations = [listed_evaluation(record) for record in registry.evaluations(name, version)]
        print(json.dumps({**registry.manifest(name, version), "evaluations": evaluations}, indent=2))
    elif args.verb == "pull":
        dest = registry.pull(args.ref, Path(args.dest))
        print(dest)
    elif args.verb == "push":
        from tuneline.fingerprints import code_version
        from tuneline.registry import REF_PATTERN

        if not REF_PATTERN.fullmatch(args.name) or ":" in args.name or "@" in args.name:
            raise TunelineError(f"model name {args.name!r}: use lowercase letters, digits, '.', '_' or '-'")
        manifest = registry.register(args.name, Path(args.folder).expanduser().resolve(), {
            "source": "push", "pushed_from": str(Path(args.folder).resolve()), "code_version": code_version(),
        }, idempotent=False)  # an explicit push is always a new version
        print(f"{args.name}:{manifest['version']}\t{manifest['uri']}")
        if args.alias:
            registry.promote(args.name, manifest["version"], args.alias, by="tuneline models push")
            print(f"{args.name}@{args.alias} -> {manifest['version']}")
    elif args.verb == "promote":
        name, version = registry.resolve(args.ref)
        if ":" not in args.ref:
            raise TunelineError(f"promote needs NAME:VERSION, got {args.ref!r}")
        moved = registry.promote(name, version, args.alias, by="tuneline models promote")
        print(f"{name}@{args.alias} -> {version}" + ("" if moved["moved"] else f" ({moved['reason']})"))
    return 0


def listed_evaluation(record: dict) -> dict:
    """A version's stored evaluation on other data as ``models show`` lists it (beside the manifest, not in it)."""
    scalars = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"dataset_fingerprint": record["dataset_fingerprint"], "source": record["source"], "rows": record["rows"],
            "metric": record["metric"], "metrics": scalars, "evaluated_at": record["evaluated_at"],
            "uri": record["uri"]}


def command_evaluate(args) -> int:
    """Score each version on DATA (no Prefect server: the library directly, as the flow's task does)."""
    from tuneline.access import check_allowed_locations, check_allowed_roots
    from tuneline.stages.evaluate_version import compare, evaluate_registered, plan_evaluations
    from tuneline.storage import open_storage

    root = storage_root_or_default(args.storage)
    check_allowed_locations(data=args.data, storage=root)
    storage = open_storage(root)
    planned = plan_evaluations(storage, args.refs, args.data)  # every ref resolved before anything is written
    for _, config in planned:
        check_allowed_roots(config)
    comparison = compare([evaluate_registered(storage, ref, args.data) for ref, _ in planned])
    if args.json:
        print(json.dumps(comparison))
    else:
        print_comparison(comparison)
    return 0


def print_comparison(comparison: dict) -> None:
    """Metric rows by version columns, the gate metric first; then where each result is stored."""
    from tuneline.stages.evaluate_version import comparison_table

    print(f"data     {comparison['source']}: {comparison['rows']} rows, fingerprint "
          f"{comparison['dataset_fingerprint'][:16]}")
    gate = f" (gate, {'lower' if comparison['lower_is_better'] else 'higher'} is better)"
    table = comparison_table(comparison)
    columns = list(table[0])[1:]
    lines = [["metric", *columns]] + [
        [row["metric"] + (gate if row["metric"] == comparison["metric"] else ""),
         *(f"{row[c]:.4f}" if isinstance(row[c], float) else "-" if row[c] is None else str(row[c]) for c in columns)]
        for row in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(line[0].ljust(widths[0]) + "".join("  " + cell.rjust(w) for cell, w in zip(line[1:], widths[1:])))
    for evaluation in comparison["evaluations"]:
        status = "reused (evaluated earlier)" if evaluation["reused"] else "stored"
        print(f"{evaluation['model']}:{evaluation['version']}  {status}: {evaluation['uri']}")


def command_predict(args) -> int:
    """Predict DATA with a registered version (the library directly, as the flow's task does); a short summary."""
    from tuneline.access import check_allowed_locations
    from tuneline.stages.predict import predict_file

    root = storage_root_or_default(args.storage)
    check_allowed_locations(data=args.data, out=args.out, storage=root)

    def progress(done: int, total: int) -> None:
        if done < total:  # long inputs only: the summary reports the end
            print(f"predicted {done}/{total} rows ({100 * done / total:.0f}%)", file=sys.stderr, flush=True)

    result = predict_file(args.ref, args.data, args.out, batch_size=args.batch_size, storage_root=root,
                          text_column=args.text_column, text_pair_column=args.text_pair_column,
                          max_new_tokens=args.max_new_tokens, data_format=args.data_format, progress=progress)
    print(f"model    {result.model}:{result.version} ({result.task}, on {result.device})")
    print(f"rows     {result.rows} in {result.predict_seconds:.1f}s: {result.rows_per_second:.1f} rows/s "
          f"(batch size {result.batch_size}; {result.seconds:.1f}s in all)")
    print(f"columns  {', '.join(result.columns)}")
    print(f"out      {result.output}" + (f" (version recorded in {result.metadata})"
                                         if result.metadata != result.output else " (version in its metadata)"))
    return 0


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (docker stop, preemption, Prefect cancellation) ends the command like Ctrl-C: every ``finally`` and
    exit handler runs, so the training child checkpoints first and Prefect's temporary server is stopped.
    During a flow run Prefect handles the signal itself and hands it on here once the run is torn down."""
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm) if args.command in ("run", "sweep") else None
    try:
        commands = {"run": command_run, "sweep": command_sweep, "models": command_models,
                    "evaluate": command_evaluate, "predict": command_predict}
        return commands[args.command](args)
    except TunelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an outage: one paragraph, the traceback only on request
        if os.environ.get("TUNELINE_DEBUG"):
            raise
        print(f"error: {redact_urls(f'{type(err).__name__}: {err}')} (set TUNELINE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
