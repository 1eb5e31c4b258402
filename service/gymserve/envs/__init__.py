"""What an env is and how it is made: the allowlist and factory, the kwargs policy, operators' modules, cost."""
