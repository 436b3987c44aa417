"""``make serve``: the whole stack on this machine, in the foreground.

Starts a local S3 (SeaweedFS, data in ``.serve/s3``, S3 on :8333), a Prefect server (UI and API
on 127.0.0.1:4200, database in ``.serve/prefect``), sets up pool ``gpu`` with its concurrency
limits (and the failure alert when $TUNELINE_ALERT_WEBHOOK_URL is set; infra/setup_prefect.py),
uploads the demo data to the scheduled deployment's data location
(s3://tuneline/datasets/reviews/), deploys deployments/prefect.yaml and starts a process worker
on pool ``gpu``. Prints the UI address; Ctrl+C stops everything (the data stays in .serve/).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.s3_server import dev_credentials  # noqa: E402
from scripts.prefect_stack import PrefectStack  # noqa: E402
from scripts.s3_service import DEFAULT_PORTS, SeaweedS3  # noqa: E402

RETRAIN_DATA = "datasets/reviews/reviews.csv"  # under s3://tuneline/, as deployments/prefect.yaml says


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".serve", help="state folder (kept between runs)")
    parser.add_argument("--port", type=int, default=4200, help="Prefect UI / API port")
    parser.add_argument("--s3-port", type=int, default=8333, help="S3 port")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # stop the children too, as on Ctrl+C

    state = (REPO / args.dir).resolve()
    credentials = dev_credentials(state / "s3")
    s3 = SeaweedS3(state / "s3", bucket="tuneline", ports={**DEFAULT_PORTS, "s3.port": args.s3_port},
                   access_key=credentials["access_key"], secret_key=credentials["secret_key"])
    stack = PrefectStack(state / "prefect", port=args.port, extra_env=s3.env())
    try:
        print(f"starting S3 at {s3.endpoint} ...", flush=True)
        s3.start()
        s3.client().upload_file(str(REPO / "examples" / "data" / "reviews.csv"), "tuneline", RETRAIN_DATA)
        print(f"starting the Prefect server at {stack.url} ...", flush=True)
        stack.start()
        print(stack.setup().stdout, end="", flush=True)
        stack.deploy()
        stack.start_worker()
        print(f"""
Prefect UI: {stack.url}
  Deployments -> finetune-on-demand -> Run -> Custom run: the config form (defaults: the demo)
  retrain-nightly runs at 02:00 Europe/Berlin from s3://tuneline/{RETRAIN_DATA.rpartition('/')[0]}/
Worker on pool 'gpu' (process); logs in {stack.home}/worker.log, server log in {stack.home}/server.log.
On-demand models go to ./.tuneline; the nightly one to s3://tuneline/registry. For the CLI:
  export PREFECT_API_URL={stack.api_url}""" + "".join(f"\n  export {k}={v}" for k, v in s3.env().items()) + """

Ctrl+C stops everything.""", flush=True)
        while stack.server.poll() is None and stack.worker.poll() is None and s3.running:
            time.sleep(1)
        print("a service stopped; see the logs above", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        stack.stop()
        s3.stop()


if __name__ == "__main__":
    main()
