"""Build a busybox image from the host's busybox-static, with no network.

One layer: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group; OCI or Docker.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pallet.errors import NotFound, SystemFailure
from pallet.image.layout import TarEntry, make_tar, write_image_layout
from pallet.image.manifest import host_platform

BUSYBOX = "/bin/busybox"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"


def busybox_layer(busybox: str = BUSYBOX) -> bytes:
    """The busybox rootfs as an uncompressed tar, deterministic for a given binary."""
    path = Path(busybox)
    if not path.is_file():
        raise NotFound(f"{busybox} not found: install the busybox-static package")
    try:
        applets = subprocess.run(
            [busybox, "--list-full"], check=True, capture_output=True, text=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemFailure(f"cannot list the applets of {busybox}: {e}") from None
    dirs = ["bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "usr", "usr/bin",
            "usr/sbin", "var", "var/spool", "var/spool/mail", "var/www"]
    entries = [TarEntry(d + "/", "dir", mode=0o755) for d in dirs]
    entries.append(TarEntry("tmp/", "dir", mode=0o1777))
    entries.append(TarEntry("bin/busybox", data=path.read_bytes(), mode=0o755))
    entries.append(TarEntry("etc/passwd", data=PASSWD))
    entries.append(TarEntry("etc/group", data=GROUP))
    for applet in sorted(set(applets)):
        if applet != "bin/busybox" and applet.split("/")[0] in ("bin", "sbin", "usr"):
            entries.append(TarEntry(applet, "symlink", mode=0o777, linkname="/bin/busybox"))
    return make_tar(entries)


def build_busybox_layout(
    dest_dir: str | Path,
    media: str = "oci",
    ref_name: str = "latest",
    busybox: str = BUSYBOX,
    architecture: str | None = None,
) -> Path:
    """Write the busybox image into the OCI layout at `dest_dir` and return the dir."""
    write_image_layout(
        dest_dir,
        [busybox_layer(busybox)],
        {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
         "Cmd": ["sh"]},
        ref_name=ref_name,
        media=media,
        architecture=architecture or host_platform().architecture,
    )
    return Path(dest_dir)
