"""``make s3``: a local S3 server (SeaweedFS) in the foreground, for running tuneline against S3.

Keeps its data in ``--dir`` (default ./.s3data) and serves S3 on ``--port`` (default 8333);
the other SeaweedFS listeners use weed's usual ports. The access key and a random secret are
made on the first start and kept in ``<dir>/dev-credentials.json`` (mode 0600), so the same
exports keep working across restarts. Ctrl+C stops the server; the data stays.

The server class is scripts/s3_service.py (also used by the tests and benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.s3_service import DEFAULT_PORTS, SeaweedS3  # noqa: E402


def dev_credentials(data_dir: Path) -> dict[str, str]:
    """The access key and secret of this data folder, made once."""
    path = data_dir / "dev-credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = {"access_key": "tuneline-dev", "secret_key": secrets.token_urlsafe(24)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    return credentials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=".s3data", help="data folder (kept between runs)")
    parser.add_argument("--port", type=int, default=8333, help="S3 port")
    parser.add_argument("--bucket", default="tuneline", help="bucket created on start")
    parser.add_argument("--prefix", default="dev", help="prefix shown in the suggested TUNELINE_STORAGE")
    args = parser.parse_args()

    data_dir = Path(args.dir).resolve()
    credentials = dev_credentials(data_dir)
    server = SeaweedS3(data_dir, bucket=args.bucket, ports={**DEFAULT_PORTS, "s3.port": args.port},
                       access_key=credentials["access_key"], secret_key=credentials["secret_key"])
    try:
        server.start(foreground=True)
        exports = {**server.env(), "TUNELINE_STORAGE": f"s3://{args.bucket}/{args.prefix}"}
        print(f"\nS3 is up at {server.endpoint} (data in {data_dir}). In another shell:\n", flush=True)
        for name, value in exports.items():
            print(f"export {name}={value}")
        print("\nCtrl+C stops the server.", flush=True)
        server.process.wait()
        print(f"weed exited with {server.process.returncode}", file=sys.stderr)
        sys.exit(server.process.returncode or 1)
    except KeyboardInterrupt:
        print("\nstopping S3 ...", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
