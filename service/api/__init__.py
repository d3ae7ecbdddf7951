"""The HTTP API: the app (``app``), thin routes (``routes/``) over keyword-only operations (``ops/``), request and
response shapes (``schemas/``), dependencies (``deps``), the one error tree (``errors``), access control
(``gate``), request limits (``limits``, ``ratelimit``), the Label Studio bridge (``labelstudio*``) and the browser
pages (``web/``)."""
