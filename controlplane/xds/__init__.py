"""xDS serving: snapshots, the per-shape snapshot cache, SotW and delta stream state machines, gRPC server."""
