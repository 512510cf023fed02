"""Resumable, verified downloads, against a local HTTP server (no network needed)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import re
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from acn.data import download as dl
from acn.data.formats.cifar import load_cifar10
from acn.data.formats.mnist import load_mnist, load_mnist_static
from acn.errors import DataError

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens there


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless the path is in ``no_range``."""

    def do_GET(self):  # noqa: N802 - the http.server API
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.path not in server.no_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.cut:  # the connection drops half-way
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)
        server.sent += len(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.no_range, httpd.cut, httpd.log, httpd.sent = {}, set(), set(), [], 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_fetch_downloads_verifies_and_then_skips(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "f.bin"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD), sha256=sha) == dest
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("f.bin.part").exists()
    dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert len(server.log) == 1  # present and verified: no second request


def test_fetch_resumes_a_partial_download(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(PAYLOAD[:100_000])
    dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.log == [("/f.bin", "bytes=100000-")] and server.sent == 200_000


def test_fetch_interrupted_then_resumed(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut.add("/f.bin")
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="run again to resume"):
        dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert dest.with_name("f.bin.part").stat().st_size == len(PAYLOAD) // 2 and not dest.exists()
    server.cut.clear()
    dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and server.log[-1] == ("/f.bin", "bytes=150000-")


def test_fetch_starts_over_when_the_range_is_ignored(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.no_range.add("/f.bin")
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"stale bytes from another version")
    dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and server.sent == len(PAYLOAD)


def test_fetch_accepts_a_part_that_is_already_complete(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(PAYLOAD)
    dl.fetch(server.url + "/f.bin", dest, md5=md5(PAYLOAD))  # server answers 416
    assert dest.read_bytes() == PAYLOAD and server.sent == 0


def test_fetch_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    wrong = "0" * 32
    with pytest.raises(DataError, match=f"f.bin from .*md5 mismatch \\(expected {wrong}, got "):
        dl.fetch(server.url + "/f.bin", dest, md5=wrong)
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()


def test_fetch_without_a_network_says_where_to_put_the_file(server, tmp_path):
    dest = tmp_path / "MNIST" / "raw" / "x.gz"
    with pytest.raises(
        DataError, match=f"could not download {UNREACHABLE}x.gz .* put it at {dest}"
    ):
        dl.fetch(UNREACHABLE + "x.gz", dest, timeout=5)
    with pytest.raises(DataError, match="HTTP 404"):
        dl.fetch(server.url + "/missing", dest)
    assert not dest.exists()


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _serve_mnist(server, monkeypatch, rng) -> dict[str, bytes]:
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (12, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 12)),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (4, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 4)),
    }
    server.files.update({f"/mnist/{k}": v for k, v in files.items()})
    monkeypatch.setattr(dl, "MNIST_MIRRORS", (UNREACHABLE, server.url + "/mnist/"))
    monkeypatch.setattr(dl, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
    return files


def test_download_mnist_falls_back_to_the_second_mirror(server, tmp_path, monkeypatch):
    files = _serve_mnist(server, monkeypatch, np.random.default_rng(1))
    folder = dl.download("mnist", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert load_mnist(tmp_path).splits["test"][0].shape == (4, 1, 28, 28)
    monkeypatch.setattr(dl, "MNIST_MIRRORS", (UNREACHABLE,))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: every mirror failed"):
        dl.download("mnist", tmp_path)


def test_download_binarized_mnist_checks_checksums(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    texts, table = {}, {}
    for split, n in (("train", 10), ("valid", 2), ("test", 4)):
        rows = (rng.random((n, 784)) < 0.2).astype(int)
        texts[split] = ("\n".join(" ".join(map(str, r)) for r in rows) + "\n").encode()
        server.files[f"/bin/binarized_mnist_{split}.amat"] = texts[split]
        table[split] = (n, hashlib.sha256(texts[split]).hexdigest())
    monkeypatch.setattr(dl, "BINARIZED_MNIST_URL", server.url + "/bin/")
    monkeypatch.setattr(dl, "BINARIZED_MNIST", table)
    monkeypatch.setattr(dl, "MNIST_MIRRORS", (UNREACHABLE,))  # labels are optional
    dl.download("mnist-static", tmp_path)
    assert load_mnist_static(tmp_path).splits["val"][0].shape == (2, 1, 28, 28)
    table["test"] = (4, hashlib.sha256(b"another file").hexdigest())  # the server's file changed
    path = tmp_path / "binarized_mnist" / "binarized_mnist_test.amat"
    path.unlink()
    with pytest.raises(DataError, match="sha256 mismatch") as excinfo:
        dl.download("mnist-static", tmp_path)
    assert "binarized_mnist_test.amat" in str(excinfo.value) and not path.exists()


def _cifar_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def _cifar_members(rng) -> dict[str, bytes]:
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 10).tolist(),
        }
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    return members


def test_download_cifar10_extracts_into_place(server, tmp_path, monkeypatch):
    archive = _cifar_tar(_cifar_members(np.random.default_rng(3)))
    server.files["/cifar.tar.gz"] = archive
    monkeypatch.setattr(dl, "CIFAR10_URL", server.url + "/cifar.tar.gz")
    monkeypatch.setattr(dl, "CIFAR10_MD5", md5(archive))
    folder = dl.download("cifar10", tmp_path)
    assert folder == tmp_path / "cifar-10-batches-py"
    assert load_cifar10(tmp_path).splits["train"][0].shape == (45, 3, 32, 32)
    assert not list(tmp_path.glob(".extract-*"))


@pytest.mark.parametrize(
    "evil",
    [
        {"members": {"cifar-10-batches-py/../../escaped": b"x"}},
        {"members": {"/tmp/acn-escaped-absolute": b"x"}},
        {"members": {}, "links": {"cifar-10-batches-py/data_batch_1": "/etc/passwd"}},
    ],
)
def test_extraction_refuses_unsafe_members(server, tmp_path, monkeypatch, evil):
    archive = _cifar_tar(evil["members"], evil.get("links"))
    server.files["/cifar.tar.gz"] = archive
    monkeypatch.setattr(dl, "CIFAR10_URL", server.url + "/cifar.tar.gz")
    monkeypatch.setattr(dl, "CIFAR10_MD5", md5(archive))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: refusing to extract member"):
        dl.download("cifar10", root)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/acn-escaped-absolute").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_corrupt_archive_names_the_file(server, tmp_path, monkeypatch):
    archive = _cifar_tar(_cifar_members(np.random.default_rng(4)))[:-2000]
    server.files["/cifar.tar.gz"] = archive
    monkeypatch.setattr(dl, "CIFAR10_URL", server.url + "/cifar.tar.gz")
    monkeypatch.setattr(dl, "CIFAR10_MD5", md5(archive))
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: corrupt or truncated archive"):
        dl.download("cifar10", tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("imagenet32", "Imagenet32_train_npz.zip.*/imagenet32/train_data_batch_1.npz"),
        ("imagenet64", "Imagenet64_train_part1_npz.zip.*/imagenet64/val_data.npz"),
        ("celeba", "img_align_celeba.zip.*/celeba/list_eval_partition.txt"),
        ("svhn", "unknown dataset 'svhn'; valid: digits, mnist"),
    ],
)
def test_manual_and_unknown_datasets_explain_what_to_do(tmp_path, name, expected):
    with pytest.raises(DataError, match=expected):
        dl.download(name, tmp_path)
