"""One path for every request that names an env: decode, resolve, run under the env's lock, encode."""
