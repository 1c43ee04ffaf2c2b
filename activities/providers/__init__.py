"""Provider work: calls through the adapter protocol (submit, check, wait, fetch, cancel), how
their errors cross an activity boundary, local simulation as one compute activity, and an
account's ledger reconciled with the provider's own task list."""
