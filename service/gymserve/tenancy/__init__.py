"""Tenants: who may use the farm (keys), whose envs are whose (isolation) and how much each may hold (quotas)."""
