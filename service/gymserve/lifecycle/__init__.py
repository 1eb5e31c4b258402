"""What happens to envs over their life: the Envs service, its registry, placement, copies, keys and labels."""
