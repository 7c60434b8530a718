"""CRI v1 ImageService over pallet.image.store: ListImages, ImageStatus, PullImage,
RemoveImage, ImageFsInfo. Translation only; the image store does the work.

Pulls run in a spawner worker: the registry client (httpx, TLS contexts, the threads that
fetch layers and their malloc arenas) then never lives in the daemon, which keeps ~6 MB less.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

from pallet.config import Config, RegistryAuth, registry_auth_credentials
from pallet.errors import InvalidArgument, NotFound
from pallet.image.reference import parse_reference
from pallet.image.store import Image, ImageStore

if TYPE_CHECKING:
    from pallet.cri.spawner import Spawner

FS_USAGE_TTL = 10.0  # s: kubelet asks every few seconds; walking a big store is not free


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, config: Config, store: ImageStore | None = None,
                 spawner: Spawner | None = None):
        self.config = config
        self.store = store or ImageStore(config.root, registry=config.registry_config())
        self.spawner = spawner  # None: pull in this process
        self._usage_lock = threading.Lock()
        self._usage: tuple[float, pb.FilesystemUsage] | None = None

    # -- RPCs ----------------------------------------------------------------
    def ListImages(self, request: pb.ListImagesRequest, context: grpc.ServicerContext
                   ) -> pb.ListImagesResponse:
        want = request.filter.image.image if request.HasField("filter") else ""
        if want:
            try:
                images = [self.store.get(want)]
            except (NotFound, InvalidArgument):
                images = []  # a filter that matches nothing is an empty list, as containerd
        else:
            images = self.store.list()
        return pb.ListImagesResponse(images=[self._image(i) for i in images])

    def ImageStatus(self, request: pb.ImageStatusRequest, context: grpc.ServicerContext
                    ) -> pb.ImageStatusResponse:
        ref = _required(request.image.image, "image.image")
        try:
            image = self.store.get(ref)
        except NotFound:
            # CRI: an absent image is an empty response, not an error.
            return pb.ImageStatusResponse()
        info = {}
        if request.verbose:
            info["info"] = json.dumps(_verbose_info(image))
        return pb.ImageStatusResponse(image=self._image(image), info=info)

    def PullImage(self, request: pb.PullImageRequest, context: grpc.ServicerContext
                  ) -> pb.PullImageResponse:
        ref = _required(request.image.image, "image.image")
        store = self.store
        if request.HasField("auth"):
            store = self._store_with_auth(ref, request.auth)
        if self.spawner is None:
            image_id = store.pull(ref).id
        else:
            image_id = str(self.spawner.call("pallet.cri.workers:pull_image", {
                "root": str(store.root), "ref": ref, "registry": store.registry.to_json()}))
        self._usage = None  # the store grew: ImageFsInfo must not answer from before
        # kubelet passes this back to ImageStatus/CreateContainer: the id is stable across tags.
        return pb.PullImageResponse(image_ref=image_id)

    def RemoveImage(self, request: pb.RemoveImageRequest, context: grpc.ServicerContext
                    ) -> pb.RemoveImageResponse:
        ref = _required(request.image.image, "image.image")
        try:
            image = self.store.get(ref)
        except NotFound:
            return pb.RemoveImageResponse()  # CRI: idempotent
        # containerd removes the image with all its names, whichever name was asked for.
        try:
            self.store.remove(image.id, force=True)
        except NotFound:
            pass  # removed concurrently: still the outcome asked for
        self._usage = None
        return pb.RemoveImageResponse()

    def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: grpc.ServicerContext
                    ) -> pb.ImageFsInfoResponse:
        return pb.ImageFsInfoResponse(image_filesystems=[self._fs_usage()])

    # -- translation -----------------------------------------------------------
    def _image(self, image: Image) -> pb.Image:
        uid, username = _image_user(image.config.raw.get("config", {}).get("User", "") or "")
        out = pb.Image(
            id=image.id,
            repo_tags=list(image.names),
            repo_digests=[_full_repo_digest(d) for d in image.repo_digests],
            size=image.size,
            username=username,
            spec=pb.ImageSpec(image=image.id),
            pinned=self._pinned(image),
        )
        if uid is not None:
            out.uid.value = uid
        return out

    def _pinned(self, image: Image) -> bool:
        # The pause image is pinned, as containerd does, so kubelet's image GC keeps it.
        try:
            pause = str(parse_reference(self.config.pause_image))
        except InvalidArgument:
            return False
        return pause in image.names

    def _store_with_auth(self, ref: str, auth: pb.AuthConfig) -> ImageStore:
        """A store sharing the root, with the request's credentials for the image's registry."""
        if auth.registry_token and not (auth.username or auth.auth or auth.identity_token):
            raise InvalidArgument("PullImage: auth.registry_token is not supported; "
                                  "send username/password, auth or identity_token")
        creds = registry_auth_credentials(RegistryAuth(
            username=auth.username, password=auth.password, auth=auth.auth,
            identity_token=auth.identity_token))
        base = self.store.registry
        if not creds:
            return self.store
        from pallet.image import auth as image_auth

        auths = dict(base.auths if base.auths is not None else image_auth.load_auths())
        r = parse_reference(ref)
        hosts = {r.domain, r.api_host}
        if auth.server_address:
            hosts.add(auth.server_address.removeprefix("https://").removeprefix("http://")
                      .split("/", 1)[0])
        for host in hosts:
            auths[host] = creds
        return ImageStore(self.store.root, registry=dataclasses.replace(base, auths=auths))

    def _fs_usage(self) -> pb.FilesystemUsage:
        with self._usage_lock:
            now = time.monotonic()
            if self._usage and now - self._usage[0] < FS_USAGE_TTL:
                return self._usage[1]
            used = inodes = 0
            for sub in ("content", "snapshots"):
                u, n = _disk_usage(os.path.join(self.store.root, sub))
                used += u
                inodes += n
            usage = pb.FilesystemUsage(
                timestamp=time.time_ns(),
                fs_id=pb.FilesystemIdentifier(mountpoint=str(self.store.root)),
                used_bytes=pb.UInt64Value(value=used),
                inodes_used=pb.UInt64Value(value=inodes),
            )
            self._usage = (now, usage)
            return usage


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required: give an image reference or id")
    return value


def _image_user(user: str) -> tuple[int | None, str]:
    """CRI splits an image's User into a numeric uid or a name (the group is dropped)."""
    name = user.split(":", 1)[0]
    if name.isdigit():
        return int(name), ""
    return None, name


def _full_repo_digest(familiar: str) -> str:
    try:
        return str(parse_reference(familiar))
    except InvalidArgument:
        return familiar


def _verbose_info(image: Image) -> dict[str, Any]:
    return {
        "imageSpec": image.config.raw,
        "chainID": image.chain[-1] if image.chain else "",
        "manifestDigest": image.manifest_digest,
        "manifestMediaType": image.manifest_media_type,
        "names": image.names,
        "layers": [{"digest": layer.digest, "size": layer.size, "mediaType": layer.media_type}
                   for layer in image.layers],
    }


def _disk_usage(path: str) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes under path, counting hard links once."""
    used = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                used += st.st_blocks * 512
                inodes += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return used, inodes
