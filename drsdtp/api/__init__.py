"""The application API server: ``convert`` (domain values to protobuf), ``errors`` (the one error-to-status
mapping), ``services`` (one implementation per method), ``guard`` (what every call passes), ``server`` (the
gRPC face), ``node`` (the narrow, wire-free Protocol of the node the services are given), and the Watch
machinery (``feed``, ``watch_limits``, ``services.watch``), ``recovery`` (write-ahead log recovery reports as
protobuf). Depends on the engine, history, ingest and gossip
types below it, never on :mod:`drsdtp.node` (which builds it)."""
