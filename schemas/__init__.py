"""Versioned pydantic contracts at every boundary of qloop."""
