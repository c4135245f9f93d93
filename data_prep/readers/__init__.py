"""One reader per raw format (``list_tasks`` and ``read_task``). A dataset is registered once, in
``pose3d.schema.REGISTRY``, which names its reader module."""
