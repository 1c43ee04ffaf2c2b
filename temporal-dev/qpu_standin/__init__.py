"""A local QPU stand-in that speaks enough of the Amazon Braket REST API for the unmodified SDK.

Tasks are queued per device, executed on Aer with a qloop device profile's noise model, and
their results written to S3 (a moto server) exactly where `AwsQuantumTask.result()` looks.
Faults (throttling, 5xx, lost replies, task failures, outages, queue delays) are configurable
at start and at run time; state lives in SQLite so a restart loses no task.
"""
