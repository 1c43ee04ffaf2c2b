"""How activities run on a worker: long work in heartbeating threads and child processes;
logs, traces and metrics."""
