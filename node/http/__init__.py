"""The HTTP API: one app (``app.create_app``), one router per area
(``content``, ``overlay``, ``quotas``, ``agents``), every request and response
model and JSON shape (``models``), the raw data path (``data``), BRC-103/104
(``auth``) and the error answers (``errors``). Routes see the node only
through ``context.NodeContext``.

Nothing is imported here, so the CLI can use ``models``' shapes without
loading the web stack."""
