"""L5: the ``kyb`` command, which wires the components together."""
