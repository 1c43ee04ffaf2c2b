"""The circuits of a batch in Qiskit: parsed from their OpenQASM, checked, bound at every
binding of a template, mapped onto a simulated device when they are not on it already, and their
counts in qloop's canonical order. Shared by the local simulators and the programs compiled for
remote devices; no simulator is imported here.
"""

from __future__ import annotations

from qiskit import QuantumCircuit, qasm2, qasm3, transpile
from qiskit.circuit import Parameter

from adapters.errors import InvalidRequestError
from adapters.job_limits import MAX_CIRCUITS_PER_JOB, MAX_SHOTS
from schemas.execution import Capabilities, CircuitSpec, Pricing, Tier
from schemas.profile import DeviceProfile

IDEAL_QUBITS = 28
# Closed under inversion (sx/sxdg, s/sdg, t/tdg, self-inverse rest, parametrised rotations) so
# that folding a circuit for ZNE never leaves the basis.
IDEAL_BASIS = [
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "rx", "ry", "rz", "p", "u", "cx", "cz", "swap", "ccx", "measure",
]  # fmt: skip
# Not gates: Aer executes these natively and a noise model never targets them.
NON_GATES = frozenset({"measure", "barrier", "reset", "delay"})
CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "break_loop",
                          "continue_loop", "box"})  # fmt: skip


def simulator_capabilities(
    provider: str, device: str, profile: DeviceProfile | None, num_qubits: int
) -> Capabilities:
    """A local simulator: free, any qubit pair unless a device profile says otherwise."""
    return Capabilities(
        provider=provider,
        device=device,
        tier=Tier.SIMULATOR if profile is None else Tier.NOISY_SIMULATOR,
        num_qubits=num_qubits,
        basis_gates=list(IDEAL_BASIS if profile is None else profile.basis_gates),
        coupling_map=None if profile is None else list(profile.coupling_map),
        max_shots=MAX_SHOTS,
        max_circuits_per_job=MAX_CIRCUITS_PER_JOB,
        cancellable=True,
        pricing=Pricing(source=f"{provider} local simulator, free"),
        simulated_in_activity=True,
    )


def prepare_circuit(spec: CircuitSpec, profile: DeviceProfile | None) -> QuantumCircuit:
    """Parse and check one circuit; map it onto the device only if it is not there already."""
    circuit = parse_circuit(spec)
    max_qubits = IDEAL_QUBITS if profile is None else profile.num_qubits
    if circuit.num_qubits > max_qubits:
        raise InvalidRequestError(
            f"circuit {spec.name!r} uses {circuit.num_qubits} qubits; the device has {max_qubits}"
        )
    if circuit.num_clbits == 0:
        raise InvalidRequestError(f"circuit {spec.name!r} measures nothing: it has no clbits")
    if circuit.num_clbits != spec.num_clbits:
        raise InvalidRequestError(
            f"circuit {spec.name!r} declares {spec.num_clbits} clbits but its QASM has "
            f"{circuit.num_clbits}"
        )
    if _runs_as_is(circuit, profile):
        return circuit
    return _map_to_device(spec.name, circuit, profile)


def parse_circuit(spec: CircuitSpec) -> QuantumCircuit:
    if spec.parameters:
        return _parsed_template(spec)
    try:
        return qasm2.loads(
            spec.qasm,
            custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS,
            custom_classical=qasm2.LEGACY_CUSTOM_CLASSICAL,
        )
    except Exception as exc:
        raise InvalidRequestError(f"circuit {spec.name!r} is not valid OpenQASM 2: {exc}") from exc


def _parsed_template(spec: CircuitSpec) -> QuantumCircuit:
    try:
        circuit = qasm3.loads(spec.qasm)
    except Exception as exc:
        raise InvalidRequestError(f"template {spec.name!r} is not valid OpenQASM 3: {exc}") from exc
    unbound = sorted({p.name for p in circuit.parameters} - set(spec.parameters))
    if unbound:
        raise InvalidRequestError(
            f"template {spec.name!r} declares inputs {unbound} that its parameters "
            f"{spec.parameters} do not bind"
        )
    return circuit


def parameter_columns(spec: CircuitSpec, circuit: QuantumCircuit) -> dict[Parameter, list[float]]:
    """The values of each of the circuit's parameters, one per binding (Aer's parameter_binds)."""
    position = {name: i for i, name in enumerate(spec.parameters)}
    return {
        parameter: [row[position[parameter.name]] for row in spec.bindings]
        for parameter in circuit.parameters
    }


def bound_circuits(spec: CircuitSpec, circuit: QuantumCircuit) -> list[QuantumCircuit]:
    """The spec's executed circuits: the circuit itself, or the template at every binding."""
    if not spec.parameters:
        return [circuit]
    columns = parameter_columns(spec, circuit)
    return [
        circuit.assign_parameters({p: values[row] for p, values in columns.items()})
        for row in range(len(spec.bindings))
    ]


def _runs_as_is(circuit: QuantumCircuit, profile: DeviceProfile | None) -> bool:
    if profile is None:
        allowed = set(IDEAL_BASIS) | NON_GATES | CONTROL_FLOW
        return all(inst.operation.name in allowed for inst in circuit.data)
    # On a noisy device every gate must be one the noise model knows, on a coupled pair;
    # anything else would run silently noiseless.
    allowed = set(profile.basis_gates) | NON_GATES
    coupled = {tuple(edge) for edge in profile.coupling_map}
    for inst in circuit.data:
        if inst.operation.name not in allowed:
            return False
        if inst.operation.name not in NON_GATES and len(inst.qubits) == 2:
            pair = tuple(circuit.find_bit(q).index for q in inst.qubits)
            if pair not in coupled:
                return False
    return True


def _map_to_device(
    name: str, circuit: QuantumCircuit, profile: DeviceProfile | None
) -> QuantumCircuit:
    """Translate at optimization_level=0: a ZNE fold must survive, so nothing is simplified.
    Sabre layout and routing still apply: a trivial layout drags in ancilla qubits through
    swaps, and every extra active qubit doubles the cost of a noisy simulation."""
    basis = IDEAL_BASIS if profile is None else profile.basis_gates
    coupling = None if profile is None else [list(edge) for edge in profile.coupling_map]
    try:
        return transpile(
            circuit,
            basis_gates=list(basis),
            coupling_map=coupling,
            optimization_level=0,
            layout_method=None if profile is None else "sabre",
            routing_method=None if profile is None else "sabre",
            seed_transpiler=0,
        )
    except Exception as exc:
        raise InvalidRequestError(f"circuit {name!r} cannot run on this device: {exc}") from exc


def canonical_counts(counts: dict[str, int], num_clbits: int) -> dict[str, int]:
    """Qiskit order (rightmost = clbit 0), no register spaces, zero-padded to num_clbits."""
    canonical: dict[str, int] = {}
    for key, count in counts.items():
        bits = key.replace(" ", "")
        if bits.startswith("0x"):
            bits = format(int(bits, 16), "b")
        bits = bits.zfill(num_clbits)
        canonical[bits] = canonical.get(bits, 0) + int(count)
    return canonical


def clbit_qubits(circuit: QuantumCircuit, name: str) -> list[int]:
    """The qubit measured into each clbit, in clbit order; each clbit exactly once."""
    measured: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name != "measure":
            continue
        clbit = circuit.find_bit(inst.clbits[0]).index
        if clbit in measured:
            raise InvalidRequestError(f"circuit {name!r} measures into clbit {clbit} twice")
        measured[clbit] = circuit.find_bit(inst.qubits[0]).index
    missing = sorted(set(range(circuit.num_clbits)) - set(measured))
    if missing:
        raise InvalidRequestError(f"circuit {name!r} never measures clbits {missing}")
    return [measured[clbit] for clbit in range(circuit.num_clbits)]


def execution_name(spec: CircuitSpec, row: int) -> str:
    return f"{spec.name}[{row}]" if spec.parameters else spec.name
