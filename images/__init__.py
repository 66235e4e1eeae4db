"""Images: whole-image pulls planned and finalized against the store, the OCI view,
the pull's result and per-blob status values, and the size walk of recorded images.

A pull runs in three steps, in both modes:

1. **Plan** (:func:`ingestq.images.plan.plan_pull`): resolve the reference to its root
   descriptor, ingest the root (index or manifest) into the store, read it back (the
   store verified its digest and size at commit), select the manifests of the wanted
   platforms (default: the host's; ``platforms``; ``all_platforms``), ingest each, and
   collect the configs and layers, each digest once. The plan names every blob with its
   ingest ref (containerd's ``MakeRefKey``: ``layer-sha256:...``) and its source spec.
2. **Fetch the children**: each config and layer is an ordinary ingest (the ingest core
   of :mod:`ingestq.ingest`) with the expected digest and size. The store's ref locks
   (file locks on a host, Redis leases across hosts) and the content-addressed commit
   make a blob shared by several images be fetched once, also when the pulls run at the
   same time: the second ingest of a ref waits for the first and then finds the digest
   committed.
3. **Finalize** (:func:`ingestq.images.finalize.finalize`): set containerd's GC
   reference labels on the parents and the distribution-source label on every blob of a
   registry image, then record the image in the store's OCI ``index.json`` under its
   name, only once every blob is committed (a reader of the layout never sees a partial
   image).

Who runs the steps is the jobs layer's business: in this process
(:mod:`ingestq.jobs.local.pull`, children in a thread pool) or as Celery tasks
(:mod:`ingestq.tasks.pull_task`, children as ingest jobs on any worker).

Modules: :mod:`.request` (the pull request and image sources), :mod:`.plan` (planned
blobs and the plan), :mod:`.finalize` (labels, the OCI view, recording), :mod:`.status`
(results and per-blob status), :mod:`.size` (what a recorded image holds and weighs).

May import ``errdefs``, ``store``, ``fetch`` and ``ingest`` only: never ``jobs``,
``tasks``, ``api`` or ``worker``, nor Celery or Redis.
"""
