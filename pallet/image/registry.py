"""A distribution-spec (OCI registry API v2) client on httpx: pull, push, auth, retries.

URL building and response interpretation are pure functions; `RegistryClient`
does the I/O (auth challenge, backoff on 5xx/dropped connections, resumable blobs).
"""

from __future__ import annotations

import errno
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx

from pallet.errors import FailedPrecondition, InvalidArgument, NotFound, PalletError, SystemFailure
from pallet.image import auth
from pallet.image.content import BlobWriter, ContentStore, DigestMismatch, sha256_digest
from pallet.image.manifest import ACCEPT, Descriptor
from pallet.image.registry_config import (  # noqa: F401 - re-exported: the client's API
    RegistryConfig,
    RegistryDenied,
    RegistryTLSError,
    RegistryUnavailable,
)

MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20
Progress = Callable[[str, str, int, int], None]  # (event, digest, done, total)


# -- pure protocol pieces --------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def manifest_path(repo: str, ref: str) -> str:
    return f"/v2/{repo}/manifests/{ref}"


def blob_path(repo: str, digest: str) -> str:
    return f"/v2/{repo}/blobs/{digest}"


def upload_start_path(repo: str, mount: str | None = None, from_repo: str | None = None) -> str:
    path = f"/v2/{repo}/blobs/uploads/"
    if mount and from_repo:
        path += "?" + urlencode({"mount": mount, "from": from_repo})
    return path


def upload_finish_url(location: str, base: str, digest: str) -> str:
    """The Location of an upload session may be relative and may already carry a query."""
    url = urljoin(base + "/", location)
    return url + ("&" if "?" in url else "?") + urlencode({"digest": digest})


def error_detail(resp: httpx.Response) -> str:
    """The registry's own error message from a distribution-spec error body, if any."""
    try:
        errs = resp.json().get("errors") or []
        if errs:
            e = errs[0]
            return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    return resp.reason_phrase or str(resp.status_code)


def response_error(resp: httpx.Response, what: str) -> Exception:
    """Map a failed response to pallet's error hierarchy, naming `what` was asked for."""
    detail = error_detail(resp)
    if resp.status_code == 404:
        return NotFound(f"{what}: not found ({detail})")
    if resp.status_code in (401, 403):
        return RegistryDenied(
            f"{what}: access denied ({resp.status_code} {detail}); check `pallet login` credentials"
        )
    if resp.status_code >= 500:
        return RegistryUnavailable(f"{what}: registry error {resp.status_code} ({detail})")
    return FailedPrecondition(f"{what}: registry answered {resp.status_code} ({detail})")


# -- I/O -------------------------------------------------------------------


def tls_context(ca_file: str = "", host: str = "") -> ssl.SSLContext:
    """A verifying context: the system CAs plus, for one registry, its own CA file.

    `create_default_context` loads OpenSSL's default paths, which honour SSL_CERT_FILE and
    SSL_CERT_DIR, so the system store (and an override of it) is what is trusted, not
    certifi's bundle. Like containerd's hosts.toml `ca`, the CA file adds to the system CAs.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise InvalidArgument(
                f"registry.ca_file for {host}: cannot load {ca_file!r}: {getattr(e, 'strerror', None) or e}"
            ) from None
    return ctx


def _unverified_context() -> ssl.SSLContext:
    # Cheap (no CA loading): only for hosts the user marked insecure, and loopback.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _LazyTransport(httpx.BaseTransport):
    """Builds its transport on first use: a verifying SSL context costs ~50 ms (loading the
    system CAs), which a pull from a loopback or insecure registry never needs to pay."""

    def __init__(self, factory: Callable[[], httpx.BaseTransport]):
        self._factory = factory
        self._transport: httpx.BaseTransport | None = None
        self._lock = threading.Lock()

    def _get(self) -> httpx.BaseTransport:
        with self._lock:
            if self._transport is None:
                self._transport = self._factory()
            return self._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._get().handle_request(request)

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()


class RegistryClient:
    """Talks to one registry host; safe to share between the threads of one pull."""

    def __init__(self, host: str, config: RegistryConfig | None = None):
        self.host = host
        self.config = config or RegistryConfig()
        self.insecure = is_loopback(host) or host in self.config.insecure
        self._base: str | None = None
        self._base_lock = threading.Lock()
        self._auth_headers: dict[str, str] = {}  # scope -> Authorization
        self._tokens = auth.TokenCache()
        auths = self.config.auths if self.config.auths is not None else auth.load_auths()
        self._creds = auth.credentials_for(host, auths)
        limits = httpx.Limits(max_connections=self.config.concurrency + 2)
        ca_file = self.config.ca_files.get(host, "")
        # One verifying context per client, shared by every connection: the registry, its
        # token server and the blob storage it redirects to. A secure registry needs it at
        # once (and a bad ca_file is reported now); an insecure one builds it on first use.
        default: httpx.BaseTransport
        if self.insecure:
            default = _LazyTransport(lambda: httpx.HTTPTransport(verify=tls_context(ca_file, host),
                                                                 limits=limits))
        else:
            default = httpx.HTTPTransport(verify=tls_context(ca_file, host), limits=limits)
        # Skip-verify applies to the insecure registry itself only, never to the token
        # server or storage hosts it sends us to.
        mounts: dict[str, httpx.BaseTransport] = {}
        if self.insecure:
            mounts[f"https://{host}"] = httpx.HTTPTransport(verify=_unverified_context(), limits=limits)
        self._http = httpx.Client(
            transport=default,
            mounts=mounts,
            timeout=httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0)),
            # httpx drops Authorization when a redirect leaves the origin, as docker does for
            # blob storage (S3/GCS presigned URLs must not see registry credentials).
            follow_redirects=True,
            headers={"User-Agent": "pallet/0.1"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # base URL: https always; plain http only for insecure/loopback, after https fails.
    def base_url(self) -> str:
        with self._base_lock:
            if self._base:
                return self._base
            https = f"https://{self.host}"
            if not self.insecure:
                self._base = https
                return https
            try:
                self._http.get(https + "/v2/", timeout=5.0)
                self._base = https
            except httpx.TransportError:
                self._base = f"http://{self.host}"
            return self._base

    def _token(self, challenge: auth.Challenge, scope: str) -> str:
        realm, service = challenge.realm, challenge.params.get("service", "")
        cached = self._tokens.get(realm, service, scope)
        if cached:
            return cached
        # Several scopes go as repeated `scope` parameters, as the token spec has it.
        params: dict[str, str | list[str]] = {k: v for k, v in (("service", service),) if v}
        if scope:
            params["scope"] = scope.split()
        headers = {}
        if self._creds:
            headers["Authorization"] = auth.basic_header(*self._creds)
            if self._creds[0] != "<token>":
                params["account"] = self._creds[0]
        try:
            resp = self._http.get(realm, params=params, headers=headers)
        except httpx.TransportError as e:
            raise unreachable(e, f"token for {scope}", realm) from None
        if resp.status_code != 200:
            raise response_error(resp, f"token for {scope} from {realm}")
        doc = resp.json()
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise RegistryDenied(f"token server {realm} returned no token for {scope}")
        self._tokens.put(realm, service, scope, token, float(doc.get("expires_in") or 60))
        return token

    def _authorize(self, resp: httpx.Response, scope: str, sent: str | None) -> bool:
        """Answer a 401 challenge; True if a retry makes sense (we have something new to send).

        `sent` is the Authorization the refused request carried: another thread of the same
        pull may have fetched the token since, which is then worth sending.
        """
        challenge = auth.parse_challenge(resp.headers.get("www-authenticate", ""))
        if challenge is None:
            return False
        if challenge.scheme == "bearer":
            # Ask for what we will do (e.g. pull,push for a push) plus whatever the registry
            # named; the header is kept under our scope, which is what later requests look up.
            wanted = scope.split()
            wanted += [s for s in challenge.params.get("scope", "").split() if s not in wanted]
            header = "Bearer " + self._token(challenge, " ".join(wanted))
        elif challenge.scheme == "basic" and self._creds:
            header = auth.basic_header(*self._creds)
        else:
            return False
        if header == sent:
            return False  # the same credentials were just refused
        self._auth_headers[scope] = header
        return True

    def request(
        self,
        method: str,
        path_or_url: str,
        scope: str,
        what: str,
        headers: dict[str, str] | None = None,
        content: Any = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send with auth and retries; return a response whose status is in `ok`."""
        url = path_or_url if "://" in path_or_url else self.base_url() + path_or_url
        attempt = 0
        authed = False
        while True:
            h = dict(headers or {})
            if scope in self._auth_headers:
                h["Authorization"] = self._auth_headers[scope]
            body = content() if callable(content) else content
            try:
                req = self._http.build_request(method, url, headers=h, content=body)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                if attempt >= self.config.retries or _tls_failure(e):
                    # An untrusted certificate stays untrusted: no retries for it.
                    raise unreachable(e, what, self.host) from None
                attempt += 1
                time.sleep(self.config.backoff * 2 ** (attempt - 1))
                continue
            if resp.status_code in ok:
                return resp
            if stream:
                resp.read()
            if resp.status_code == 401 and not authed:
                authed = True
                if self._authorize(resp, scope, h.get("Authorization")):
                    continue
            if (resp.status_code >= 500 or resp.status_code == 429) and attempt < self.config.retries:
                attempt += 1
                time.sleep(self.config.backoff * 2 ** (attempt - 1))
                continue
            raise response_error(resp, what)

    def verify_login(self) -> None:
        """Check this client's credentials like `docker login`: /v2/ must answer 200 with them."""
        what = f"login to {self.host}"
        url = self.base_url() + "/v2/"
        try:
            resp = self._http.get(url)
            if resp.status_code == 401 and self._creds:
                challenge = auth.parse_challenge(resp.headers.get("www-authenticate", ""))
                header = ""
                if challenge and challenge.scheme == "bearer":
                    # No scope: the token server only has to accept who we are.
                    header = "Bearer " + self._token(challenge, "")
                elif challenge and challenge.scheme == "basic":
                    header = auth.basic_header(*self._creds)
                if header:
                    resp = self._http.get(url, headers={"Authorization": header})
        except httpx.TransportError as e:
            raise unreachable(e, f"{what} failed", self.host) from None
        except RegistryDenied:
            resp = None
        if resp is not None and resp.status_code == 200:
            return
        if resp is None or resp.status_code in (401, 403):
            raise RegistryDenied(f"{what} failed: unauthorized: incorrect username or password")
        raise response_error(resp, what)

    # -- pull --------------------------------------------------------------
    def get_manifest(self, repo: str, ref: str, what: str) -> tuple[bytes, str, str]:
        """Fetch a manifest by tag or digest: (bytes, media type, digest). Verified if by digest."""
        resp = self.request(
            "GET", manifest_path(repo, ref), auth.scope_for(repo, "pull"), what,
            headers={"Accept": ACCEPT}, stream=True,
        )
        try:
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > MAX_MANIFEST:
                    raise InvalidArgument(f"{what}: manifest larger than {MAX_MANIFEST} bytes")
        except httpx.TransportError as e:
            raise RegistryUnavailable(f"{what}: manifest transfer failed: {_cause(e)}") from None
        finally:
            resp.close()
        digest = sha256_digest(bytes(data))
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatch(f"{what}: registry sent a manifest hashing to {digest}, not {ref}")
        header = resp.headers.get("docker-content-digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"{what}: manifest digest {digest} disagrees with registry's {header}")
        return bytes(data), resp.headers.get("content-type", ""), digest

    def fetch_blob(
        self, repo: str, desc: Descriptor, store: ContentStore, what: str,
        progress: Progress | None = None,
    ) -> None:
        """Download a blob into `store`, verifying while streaming; resume after drops."""
        if store.has(desc.digest, desc.size):
            if progress:
                progress("exists", desc.digest, desc.size, desc.size)
            return
        scope = auth.scope_for(repo, "pull")
        attempts = 0
        writer = BlobWriter(store, desc.digest, desc.size)
        try:
            while True:
                headers = {"Range": f"bytes={writer.written}-"} if writer.written else {}
                resp = self.request(
                    "GET", blob_path(repo, desc.digest), scope, f"{what}: blob {desc.digest}",
                    headers=headers, stream=True, ok=(200, 206),
                )
                try:
                    if writer.written and resp.status_code == 200:
                        # The server ignored Range: start over with a fresh temp file.
                        writer.abort()
                        writer = BlobWriter(store, desc.digest, desc.size)
                    # Unchunked: bytes are kept as they arrive, so a resume loses none.
                    for chunk in resp.iter_raw():
                        writer.write(chunk)
                        if progress:
                            progress("download", desc.digest, writer.written, desc.size)
                    break
                except httpx.TransportError as e:
                    attempts += 1
                    if attempts > self.config.retries:
                        raise RegistryUnavailable(
                            f"{what}: blob {desc.digest} transfer kept failing: {_cause(e)}"
                        ) from None
                    time.sleep(self.config.backoff * 2 ** (attempts - 1))
                finally:
                    resp.close()
            writer.commit()
        except DigestMismatch as e:
            writer.abort()
            raise DigestMismatch(f"{what}: {e}") from None  # name the image, not just the blob
        except OSError as e:
            writer.abort()
            if e.errno == errno.ENOSPC:
                raise SystemFailure(f"{what}: no space left on device storing {desc.digest}") from None
            raise
        except BaseException:
            writer.abort()
            raise
        if progress:
            progress("done", desc.digest, desc.size, desc.size)

    # -- push --------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str, scope: str) -> bool:
        try:
            self.request("HEAD", blob_path(repo, digest), scope, f"blob {digest}")
            return True
        except NotFound:
            return False

    def mount_blob(self, repo: str, digest: str, from_repo: str, scope: str) -> tuple[bool, str]:
        """Cross-repository mount: (True, "") if the registry linked the blob (201).

        A registry that cannot mount (the blob is not in `from_repo`, or we may not read it)
        answers 202 with a fresh upload session instead; its Location is returned so the
        upload goes there, as docker does, rather than opening a second session.
        """
        resp = self.request(
            "POST", upload_start_path(repo, digest, from_repo), scope,
            f"{self.host}/{repo}: mount {digest}", ok=(201, 202),
        )
        if resp.status_code == 201:
            return True, ""
        return False, resp.headers.get("location", "")

    def upload_blob(
        self, repo: str, desc: Descriptor, store: ContentStore, what: str,
        from_repo: str | None = None, progress: Progress | None = None,
    ) -> None:
        scope = auth.scope_for(repo, "pull,push")
        if from_repo and from_repo != repo:
            scope += " " + auth.scope_for(from_repo, "pull")
        if self.blob_exists(repo, desc.digest, scope):
            if progress:
                progress("exists", desc.digest, desc.size, desc.size)
            return
        location = ""
        if from_repo and from_repo != repo:
            mounted, location = self.mount_blob(repo, desc.digest, from_repo, scope)
            if mounted:
                if progress:
                    progress("mounted", desc.digest, desc.size, desc.size)
                return
        if not location:
            # Monolithic upload: POST opens a session, PUT ?digest= sends all bytes and closes it.
            start = self.request("POST", upload_start_path(repo), scope, f"{what}: start upload", ok=(202,))
            location = start.headers["location"]
        url = upload_finish_url(location, self.base_url(), desc.digest)

        def body() -> Iterator[bytes]:
            with store.open(desc.digest) as f:
                done = 0
                while chunk := f.read(CHUNK):
                    done += len(chunk)
                    if progress:
                        progress("upload", desc.digest, done, desc.size)
                    yield chunk

        self.request(
            "PUT", url, scope, f"{what}: upload blob {desc.digest}",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
            content=body, ok=(201, 204),
        )
        if progress:
            progress("done", desc.digest, desc.size, desc.size)

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str, what: str) -> str:
        resp = self.request(
            "PUT", manifest_path(repo, ref), auth.scope_for(repo, "pull,push"), what,
            headers={"Content-Type": media_type}, content=data, ok=(201, 200, 202),
        )
        return resp.headers.get("docker-content-digest", "")


def _ssl_error(e: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx transport error, if the handshake is what failed."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_failure(e: BaseException) -> bool:
    """An untrusted certificate: it stays untrusted, so retrying is pointless."""
    return isinstance(_ssl_error(e), ssl.SSLCertVerificationError)


def unreachable(e: httpx.TransportError, what: str, host: str) -> PalletError:
    """One line for a failed connection; an untrusted certificate says how to trust it."""
    tls = _ssl_error(e)
    try:
        host = e.request.url.netloc.decode()  # after a redirect: the host that failed
    except RuntimeError:
        pass
    if isinstance(tls, ssl.SSLCertVerificationError):
        return RegistryTLSError(
            f"{what}: TLS handshake with {host} failed (certificate verify failed: "
            f"{tls.verify_message or tls.reason}); if a private CA signed its certificate, add "
            f"the CA to the system store or set registry.ca_file for {host}"
        )
    if tls is not None and tls.reason == "WRONG_VERSION_NUMBER":
        # docker's wording; plain HTTP is only for insecure and loopback hosts.
        return RegistryUnavailable(
            f"{what}: {host} gave an HTTP response to an HTTPS client; list it in "
            f"registry.insecure to allow plain HTTP"
        )
    return RegistryUnavailable(f"{what}: cannot reach {host}: {_cause(e)}")


def _cause(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]
