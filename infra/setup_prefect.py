"""Set up a Prefect server for tuneline: the GPU work pool, concurrency limits, the failure alert.

Reads the work-pool templates in infra/work-pools/ and infra/automations/notify-on-failure.yaml;
writes to the Prefect API in $PREFECT_API_URL (idempotent: running it again updates in place).

    python infra/setup_prefect.py --type process --gpus 1 --per-gpu 1 --webhook-url https://hooks...

- work pool ``--pool`` (default ``gpu``) of ``--type`` with ``infra/work-pools/<type>.json`` as its
  base job template, and a pool concurrency limit of gpus x per-gpu flow runs;
- tag concurrency limit ``gpu-train`` (the train task's tag) of gpus x per-gpu: at most that many
  trainings hold GPUs at once across all pools, while other stages of other runs go on;
- a webhook notification block ``tuneline-alerts`` (the URL in its secret field, masked in the UI
  and API) and the automation that uses it on Failed / Crashed finetune runs (skipped without a
  webhook URL).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parent
GPU_TAG = "gpu-train"  # tasks/train.py tags the train task with it
ALERT_BLOCK = "tuneline-alerts"
WEBHOOK_SECRET = "webhook_url"  # the key in the block's secrets that its url template names


def ensure_pool(client, name: str, pool_type: str, concurrency: int | None) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = json.loads((INFRA / "work-pools" / f"{pool_type}.json").read_text())
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:
        existing = None
    if existing and existing.type != pool_type:
        raise SystemExit(f"work pool {name!r} exists with type {existing.type!r}, not {pool_type!r}; delete it first")
    if existing:
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template, concurrency_limit=concurrency))
    else:
        client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template,
                                               concurrency_limit=concurrency,
                                               description=f"GPU workers ({pool_type}); template infra/work-pools/"))
    print(f"work pool {name!r} ({pool_type}): concurrency limit {concurrency}")


def ensure_tag_limit(client, tag: str, limit: int) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        client.delete_concurrency_limit_by_tag(tag)
    except ObjectNotFound:
        pass
    client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
    print(f"tag concurrency limit {tag!r}: {limit} task run(s) at once")


def ensure_alert_block(webhook_url: str) -> str:
    """The webhook block; its URL (often a secret itself: Slack and Teams hooks carry a token) lives in the
    block's ``secrets``, which the API and UI mask; the plain ``url`` field holds only the template."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="tuneline", url="{{" + WEBHOOK_SECRET + "}}", secrets={WEBHOOK_SECRET: webhook_url}, method="POST",
        json_data={"text": "{{subject}}\n{{body}}", "title": "{{subject}}"},
    )
    return str(block.save(ALERT_BLOCK, overwrite=True))


def automation_spec(block_id: str) -> dict:
    spec = yaml.safe_load((INFRA / "automations" / "notify-on-failure.yaml").read_text())
    for action in spec["actions"]:
        if action["type"] == "send-notification":
            action["block_document_id"] = block_id
    return spec


def ensure_automation(client, spec: dict) -> str:
    from prefect.events.schemas.automations import AutomationCore

    for old in client.read_automations_by_name(spec["name"]):
        client.delete_automation(old.id)
    automation_id = client.create_automation(AutomationCore.model_validate(spec))
    print(f"automation {spec['name']!r}: {automation_id}")
    return str(automation_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="gpu", help="work pool name (the deployments use 'gpu')")
    parser.add_argument("--type", default="process", choices=["process", "docker", "kubernetes"])
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the pool's workers have in all")
    parser.add_argument("--per-gpu", type=int, default=1, help="trainings that share one GPU at once")
    parser.add_argument("--webhook-url", default=os.environ.get("TUNELINE_ALERT_WEBHOOK_URL"),
                        help="where failure alerts are POSTed (default $TUNELINE_ALERT_WEBHOOK_URL)")
    args = parser.parse_args(argv)

    from prefect.client.orchestration import get_client

    limit = max(1, args.gpus * args.per_gpu)
    with get_client(sync_client=True) as client:
        ensure_pool(client, args.pool, args.type, limit)
        ensure_tag_limit(client, GPU_TAG, limit)
        if args.webhook_url:
            ensure_automation(client, automation_spec(ensure_alert_block(args.webhook_url)))
        else:
            print("no --webhook-url / $TUNELINE_ALERT_WEBHOOK_URL: failure alert automation not created")


if __name__ == "__main__":
    main()
