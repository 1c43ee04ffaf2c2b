"""What governs spending: the policy, the budget ledger, the backends' circuit breakers and the
reconciler of reservations that closed workflows left open."""
