"""The work behind every activity, grouped by concern; each activity is a thin wrapper
(`@implements(schemas.activity_contracts.X)`) around pure functions.

- numerics/: the numerical core (circuits, observables, readout, ZNE, classical references,
  circuit families, QASM sizes): pure functions, no Temporal, provider or store.
- experiment/: the experiment's stages in the order they run: admission, preprocess,
  prevalidate, plan, then (after the provider) mitigate and postprocess.
- variational/: batches of parameter points (prepare, score) and what loops and sweeps keep.
- providers/: calls to a provider through the adapter protocol, local simulation as one compute
  activity, and reconciling a ledger with the provider's own task list.
- governance/: policy, the budget ledger, the circuit breakers and the reservation reconciler.
- storage/: the artifact store (a folder or an S3 bucket) and the sweep point cache.
- runtime/: heartbeating child processes and threads; logs, traces and metrics.
"""
