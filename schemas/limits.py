"""Admission limits: the most a request may ask for, checked before anything is built.

Every limit is here, so README's table and the refusals agree. Each refusal names the limit and
the request's value. The limits keep every circuit of the QASMBench corpus and every example
admitted; what they stop is input that costs a worker more than it could ever be worth.
"""

from __future__ import annotations

# --- request files --------------------------------------------------------------------------

# The largest request file read: a 1 MB OpenQASM program as a YAML block scalar, with room.
MAX_REQUEST_FILE_BYTES = 2_000_000
# Nodes of a request file after YAML aliases are expanded (a sweep's explicit points are the
# largest legitimate lists); refused before anything is constructed, so an alias bomb costs
# nothing to refuse.
MAX_REQUEST_NODES = 200_000
# Mappings and lists inside each other; a request is about six deep.
MAX_REQUEST_NESTING = 32

# --- OpenQASM -------------------------------------------------------------------------------

# The Rust OpenQASM 2 parser reads a megabyte in well under a second.
MAX_QASM_BYTES = 1_000_000
# The OpenQASM 3 parser is pure-Python ANTLR: measured at about 12 us a byte for gate calls and
# 22 us a byte for arithmetic in angles (2 cores, shared), so 50 KB parse in around a second.
MAX_QASM3_BYTES = 50_000
# Gates once gate definitions, subroutines, loops, `pow` modifiers and register broadcasts are
# unrolled (QASMBench's largest circuit has 1,510).
MAX_UNROLLED_GATES = 100_000
# Classical bits declared: each is an object in the parsed circuit, and qloop measures every
# qubit into bits of its own anyway.
MAX_CLASSICAL_BITS = 1_024
# Gate definitions inside gate definitions, blocks inside blocks, parentheses inside
# parentheses: Qiskit's transpiler recurses per level of definition (measured: 100 levels run
# through preprocess, prevalidate and plan, 200 fail) and the OpenQASM 3 parser per parenthesis
# (fails near 300).
MAX_NESTING_DEPTH = 64
# `pow(k) @ g` with a non-integer k is computed as a matrix power of g's unitary: 2^n x 2^n.
MAX_POWERED_GATE_QUBITS = 8

# --- circuits and batches -------------------------------------------------------------------

# The ideal reference is an exact statevector: 2^24 amplitudes (256 MiB) is the most a worker
# should hold for one experiment.
MAX_IDEAL_QUBITS = 24
# Gates of every circuit of one batch together, estimated before folding as the logical gate
# count x measurement bases x the sum of the executed ZNE scale factors (folding at scale s
# makes about s times the gates).
MAX_BATCH_GATES = 2_000_000

# --- lists in requests ----------------------------------------------------------------------

MAX_PAULI_TERMS = 1_000
MAX_BITSTRINGS = 1_000
MAX_FALLBACKS = 8
MAX_TAGS = 32
MAX_QAOA_LAYERS = 8
# Parameters of a circuit family: VQE's (reps + 1) x qubits is at most 11 x 24.
MAX_PARAMETERS = 512
# History holds one activity result per batch; 100,000 points keep the number of batches, the
# artifacts and the table within what one sweep should be (split bigger studies).
MAX_SWEEP_POINTS = 100_000
