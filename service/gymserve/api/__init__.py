"""The HTTP surfaces: /v1 (the seed's contract) and, later, /v2 (native)."""
