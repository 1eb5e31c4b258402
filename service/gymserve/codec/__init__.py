"""Encodings of observations, actions, spaces and frames; pure functions with no Flask in sight."""
