"""The numerical core: pure functions on circuits, counts and numbers, one concept per module.

Nothing here knows Temporal, a provider, an artifact store or a worker; activities/ wraps these
functions into activities and adapters/ runs the circuits they build. Each module's public names
are its surface (this package re-exports nothing, so that importing one concept does not load
the libraries of the others: the CLI checks QASM without loading mitiq).

- circuits: logical circuits: OpenQASM 2/3 parsing and the problem templates (QAOA MaxCut,
  GHZ, mirror).
- qasm_cost: the size of an OpenQASM program (qubits, bits, gates) read before any parser
  builds it, for admission.
- observables: expectation values and standard errors of qloop observables from counts.
- readout: tensored readout mitigation, one confusion matrix per measured qubit.
- zne: zero-noise extrapolation in two stages (fold, then fit), bootstrap intervals, the fit
  plot (on mitiq).
- classical: weighted MaxCut by brute force (QAOA's baseline) and default QAOA angles.
- families: the parameterized circuit families of loops and sweeps, their observables and
  points bound into them.
"""
