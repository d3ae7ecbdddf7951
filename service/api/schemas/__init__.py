"""Request and response models of the HTTP API, one module per resource (tables' own ``XPublic`` shapes live in
``service.store.tables`` and ``service.store.ops_models``). Request models forbid unknown fields."""
