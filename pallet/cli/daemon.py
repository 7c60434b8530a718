"""`pallet daemon`: the CRI v1 server for kubelet and crictl, configured by one TOML file.

Parses flags, loads the config, forks the spawner before any thread exists, then serves
gRPC until SIGTERM/SIGINT. grpc is imported only here, after the fork, never by `pallet`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

DESCRIPTION = """\
Serve the Kubernetes CRI v1 (RuntimeService and ImageService) on a unix socket, and the
streaming server behind Exec/Attach/PortForward URLs.

Configuration comes from one TOML file: --config FILE, else $PALLET_CONFIG, else
/etc/pallet/pallet.toml if it exists, else built-in defaults. Flags override the file.
Main keys (all documented with their defaults in docs/config.md):
  root = "/var/lib/pallet"          images, containers, the engine's database
  state_dir = "/run/pallet"         runtime state (lost on reboot)
  cgroup_driver = "cgroupfs"        reported to kubelet by RuntimeConfig
  default_runtime = "pallet"        handler used when a pod names none
  [socket]   path = "/run/pallet/pallet.sock", mode = 0o660, group = ""
  [runtimes.NAME]  type = "in-process" | "binary", path, root, options
                   (pallet, runc, crun, runsc are predefined)
  [registry] mirrors = { "docker.io" = ["host:port"] }, insecure = [...],
             auth_file, [registry.auths.HOST] username/password
  [cni]      conf_dir = "/etc/cni/net.d", bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
  [stream]   address = "127.0.0.1", port = 0 (any free port), token_ttl = 60
  [logs]     max_size = -1, max_line_size = 16384
"""

# Imported before the spawner is forked (so the daemon shares these pages with it), so
# each forked worker starts warm. The image store is for pull workers (the daemon needs it
# anyway); the registry client (httpx) is not preloaded: a pull worker imports it (~50 ms).
SPAWNER_PRELOAD = ("pallet.engine.containers", "pallet.engine.handlers", "pallet.oci.create",
                   "pallet.cri.workers", "pallet.image.store", "pallet.image.auth")


# glibc gives each thread that mallocs under contention an arena of its own, up to 8 per
# core, and an arena keeps what was freed into it: the daemon's gRPC handler threads (up to
# grpc_max_workers) and grpc's own would each hold one. Two is the usual setting for threaded
# servers (the GIL serialises most allocation anyway); MALLOC_ARENA_MAX in the environment wins.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter, <malloc.h>


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("daemon", help="run the CRI server (for kubelet and crictl)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, metavar="FILE", help="TOML config file")
    p.add_argument("--socket", default=None, metavar="PATH", help="CRI socket (socket.path)")
    p.add_argument("--root", dest="daemon_root", default=None, metavar="DIR",
                   help="persistent state (root)")
    p.add_argument("--state-dir", default=None, metavar="DIR", help="runtime state (state_dir)")
    p.add_argument("--stream-address", default=None, metavar="ADDR", help="stream.address")
    p.add_argument("--stream-port", type=int, default=None, metavar="PORT", help="stream.port")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default info")
    p.set_defaults(func=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    from pallet.config import load_config

    config = load_config(args.config, {
        "root": args.daemon_root or args.root,
        "state_dir": args.state_dir,
        "socket.path": args.socket,
        "stream.address": args.stream_address,
        "stream.port": args.stream_port,
    })
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # grpc logs a full traceback for every undecodable request: a client's fault, and a way
    # to flood the log. The client still gets its INTERNAL status.
    logging.getLogger("grpc._common").setLevel(logging.CRITICAL)
    _limit_malloc_arenas()
    # The spawner must be forked while this process has one thread: before grpc starts any.
    from pallet.cri.spawner import Spawner

    spawner = Spawner.start(preload=SPAWNER_PRELOAD, listen=config.state_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        from pallet.cri.server import CRIServer

        server = CRIServer(config, spawner)
        server.start()
        try:
            print(f"pallet daemon: CRI on unix://{config.socket.path}, streaming on "
                  f"{server.streaming.base_url}", file=sys.stderr, flush=True)
            # A timed wait lets the main thread run the signal handler promptly.
            while not stop.wait(1.0):
                pass
            logging.getLogger("pallet.cri").info("shutting down")
        finally:
            server.stop()
    finally:
        spawner.close()
    return 0


def _limit_malloc_arenas() -> None:
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has no per-thread arenas to limit
