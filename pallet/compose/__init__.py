"""`pallet compose`: the Compose specification's common subset, daemonless.

`model` loads, interpolates, merges and validates compose files into a Project (pure);
`project` acts on it through the engine (networks, volumes, containers); the CLI face is
pallet.cli.compose.
"""
