"""Training: the parent that launches and watches (``launcher``), the child that trains (``process`` ->
``loop``), its checkpoints, and how several GPUs are used (``gpu_launch``)."""
