"""The Celery task names: what producers send and workers register."""

from __future__ import annotations

#: One blob: :func:`ingestq.tasks.ingest_task.ingest_task`.
TASK_INGEST = "ingestq.ingest"
#: Plan a pull and publish its children: :func:`ingestq.tasks.pull_task.pull_task`.
TASK_PULL = "ingestq.pull"
#: Wait for a pull's children, then record the image:
#: :func:`ingestq.tasks.pull_task.pull_finalize_task`.
TASK_PULL_FINALIZE = "ingestq.pull.finalize"
#: Several small local-file ingest jobs in one message:
#: :func:`ingestq.tasks.batch_task.ingest_batch_task`.
TASK_INGEST_BATCH = "ingestq.ingest.batch"
