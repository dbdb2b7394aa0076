"""Operations: the admin HTTP server (health, readiness, metrics, debug endpoints)."""
