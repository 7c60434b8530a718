"""pallet: the container stack of a Kubernetes node, in Python.

Layers (an arrow only points down): faces (cli, cri) -> engine -> image, oci.
"""

__version__ = "0.1.0"
