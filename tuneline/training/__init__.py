"""Training: the parent that launches and watches (``launcher``), the child that trains (``process`` ->
``loop``), its checkpoints, and how several GPUs are used (``gpu_launch``) or a Ray cluster (``ray_launch``, then
``ray_engine``: the Ray driver as the child, and its Ray Train workers)."""
