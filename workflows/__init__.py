"""Deterministic orchestration only: state, timers, signals and decisions."""
