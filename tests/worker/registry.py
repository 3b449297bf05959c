"""A Docker registry on 127.0.0.1 with just enough of the Registry HTTP API V2 for ``docker
pull``: the ``/v2/`` probe, then the manifest and blobs of each image it was given, or, for a
repository marked stalled, a manifest request that gets no answer until ``release``.

No registry image can be fetched here, so the tests that pull need a registry of their own. The
Docker Engine treats registries on 127.0.0.0/8 as insecure (plain HTTP) without configuration;
the daemon must share this network namespace to reach it (``requests`` shows what it asked).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Registry:
    """A registry serving on ``host`` (``127.0.0.1:<port>``) from a thread; ``close`` stops it
    and answers every stalled request first. ``requests`` lists ``(method, path)`` seen."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.stalled: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="test-registry")
        self._thread.start()

    def add_image(self, name: str, tag: str, files: dict[str, bytes], *,
                  architecture: str = "amd64") -> str:
        """Serve an image of one layer holding ``files``; returns its pull reference."""
        layer_tar = _tar(files)
        layer = gzip.compress(layer_tar, mtime=0)
        config = json.dumps({
            "architecture": architecture, "os": "linux",
            "config": {"Labels": {"servetune.test": "pulled"}},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
            "history": [{"created_by": "tests/worker/registry.py"}]}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer),
                        "digest": _digest(layer)}]}).encode()
        self.blobs[_digest(config)] = config
        self.blobs[_digest(layer)] = layer
        self.manifests[(name, tag)] = manifest
        self.manifests[(name, _digest(manifest))] = manifest  # Docker asks by digest after HEAD
        return f"{self.host}/{name}:{tag}"

    def add_stalled(self, name: str) -> str:
        """A repository whose manifest requests hang until ``release``; its reference."""
        self.stalled.add(name)
        return f"{self.host}/{name}:latest"

    def release(self) -> None:
        """Answer the stalled requests (404, manifest unknown), now and from now on."""
        self.released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the test reads registry.requests instead

        def _answer(self, *, body: bool) -> None:
            registry.requests.append((self.command, self.path))
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts == ["v2"]:
                return self._send(200, b"{}", "application/json", body)
            if len(parts) >= 4 and parts[0] == "v2" and parts[-2] == "manifests":
                name, reference = "/".join(parts[1:-2]), parts[-1]
                if name in registry.stalled:
                    registry.released.wait()
                    return self._send(404, _error("MANIFEST_UNKNOWN"), "application/json", body)
                manifest = registry.manifests.get((name, reference))
                if manifest is None:
                    return self._send(404, _error("MANIFEST_UNKNOWN"), "application/json", body)
                return self._send(200, manifest, MANIFEST_TYPE, body,
                                  {"Docker-Content-Digest": _digest(manifest)})
            if len(parts) >= 4 and parts[0] == "v2" and parts[-2] == "blobs":
                blob = registry.blobs.get(parts[-1])
                if blob is None:
                    return self._send(404, _error("BLOB_UNKNOWN"), "application/json", body)
                return self._send(200, blob, "application/octet-stream", body,
                                  {"Docker-Content-Digest": parts[-1]})
            return self._send(404, _error("NAME_UNKNOWN"), "application/json", body)

        def _send(self, status: int, payload: bytes, content_type: str, body: bool,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(payload)

    return Handler


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(code: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
