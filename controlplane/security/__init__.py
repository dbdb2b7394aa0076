"""Mesh security: SPIFFE identities, the certificate authority, workload certificates and proxy tokens.

Everything here is pure apart from the files of the CA directory: every function that needs the time takes
`now` (a UTC-aware datetime), so callers and tests decide what time it is.
"""
