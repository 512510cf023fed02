"""Fetch the public datasets from their original locations, resumably and verified.

:func:`fetch` downloads one file into ``<dest>.part``, resuming an interrupted download with an
HTTP Range request, checks its checksum and only then renames it into place, so a file under its
final name is always complete and verified. :func:`download` knows where each dataset lives and
where :mod:`acn.data.formats.base` expects it. ImageNet (an image-net.org login) and CelebA
(Google Drive) cannot be fetched automatically; asking for them raises a DataError that says
what to download and where to unpack it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from acn.errors import DataError
from acn.version import __version__

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# torchvision's mirror first, then the original site; the classic MD5s of the four files.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR page
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# Hugo Larochelle publishes no checksums. These SHA-256s are the ones TensorFlow Datasets
# records for the same URLs (tensorflow_datasets/url_checksums/binarized_mnist.txt, with sizes
# 78,400,000 / 15,680,000 / 15,680,000 bytes = 1,568 bytes per line: 784 values and their
# separators). The structure is checked as well, by parsing every line after the download.
BINARIZED_MNIST = {  # split: (images, SHA-256)
    "train": (50_000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
    "valid": (10_000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
    "test": (10_000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
}


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``"md5"`` or ``"sha256"``), read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _unreachable(url: str, dest: Path, reason: object) -> DataError:
    part = dest.with_name(dest.name + ".part")
    kept = "; the partial download is kept, run again to resume" if part.is_file() else ""
    return DataError(
        f"could not download {url} ({reason}); on a machine with a network download it and "
        f"put it at {dest}{kept}"
    )


def fetch(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, verified.

    Bytes go to ``dest.part``; when it exists, only the rest is requested (``Range``) and
    appended if the server honours the range (206), otherwise the download starts over (200).
    The complete file is checked against the given checksums, then renamed to ``dest``. A
    ``dest`` already present with the right checksum is not downloaded again.

    Returns:
        ``dest``.

    Raises:
        DataError: the URL cannot be reached (the message says where to put the file by hand),
            the download stopped early (the partial file is kept; run again to resume), or the
            checksum does not match (the partial file is deleted).
    """
    dest = Path(dest)
    expected = [(alg, want.lower()) for alg, want in (("md5", md5), ("sha256", sha256)) if want]
    if dest.is_file():
        if all(file_digest(dest, alg) == want for alg, want in expected):
            log.info("%s is present and verified", dest)
            return dest
        log.warning("%s does not match its checksum; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    total = _receive(url, part, dest, offset, timeout)
    size = part.stat().st_size
    if total is not None and size < total:
        raise DataError(
            f"download of {url} stopped at {size} of {total} bytes; run again to resume "
            f"(partial file {part})"
        )
    for alg, want in expected:
        got = file_digest(part, alg)
        if got != want:
            part.unlink()
            raise DataError(
                f"{dest.name} from {url}: {alg} mismatch (expected {want}, got {got}); the "
                "download was deleted"
            )
    os.replace(part, dest)
    return dest


def _receive(url: str, part: Path, dest: Path, offset: int, timeout: float) -> int | None:
    """Append the bytes of ``url`` from ``offset`` on to ``part`` (from the start when the
    server ignores the range); returns the whole file's size when the server says it."""
    request = urllib.request.Request(url, headers={"User-Agent": f"acn/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    log.info(
        "downloading %s to %s%s", url, dest, f" (resuming at {offset} bytes)" if offset else ""
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    part.unlink(missing_ok=True)
                    raise DataError(
                        f"{url} sent bytes {content_range!r} instead of the ones from {offset} "
                        "on; the partial download was deleted, run again"
                    )
            elif offset:
                offset = 0  # the server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with part.open("ab" if offset else "wb") as f:
                while block := response.read(CHUNK_BYTES):
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())
    except urllib.error.HTTPError as exc:
        # 416: nothing left to send, the partial file is already whole; verify it below.
        if not (exc.code == 416 and offset):
            raise _unreachable(url, dest, f"HTTP {exc.code} {exc.reason}") from None
        total = None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _unreachable(url, dest, reason) from None
    return total


def extract_tar(archive: Path, into: Path, top: str) -> Path:
    """Safely extract the folder ``top`` of a tar archive into ``into/top``.

    Every member must be a plain file or folder under ``top``, with a relative path and no
    ``..``; anything else (absolute paths, links, devices) is refused before extracting.
    Members are unpacked into a temporary folder and only then moved into place.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                inside = path.parts[:1] == (top,) and ".." not in path.parts
                if path.is_absolute() or not inside or not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: refusing to extract member {member.name!r}")
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
            try:
                # The "data" filter repeats these checks inside tarfile where available.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
                target = into / top
                target.mkdir(exist_ok=True)
                for source in sorted((tmp / top).rglob("*")):
                    final = target / source.relative_to(tmp / top)
                    if source.is_dir():
                        final.mkdir(exist_ok=True)
                    elif not final.exists():
                        os.replace(source, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: corrupt or truncated archive ({exc})") from None
    return into / top


def _mnist(root: Path) -> Path:
    folder = root / "MNIST" / "raw"
    for name, md5 in MNIST_MD5.items():
        failures = []
        for mirror in MNIST_MIRRORS:
            try:
                fetch(mirror + name, folder / name, md5=md5)
                break
            except DataError as exc:
                failures.append(str(exc))
                log.warning("%s", exc)
        else:
            raise DataError(f"{name}: every mirror failed; last: {failures[-1]}")
    return folder


def _binarized_mnist(root: Path) -> Path:
    folder = root / "binarized_mnist"
    for split, (_, sha256) in BINARIZED_MNIST.items():
        # The SHA-256 proves the file; the reader checks its shape when it is loaded.
        name = f"binarized_mnist_{split}.amat"
        fetch(BINARIZED_MNIST_URL + name, folder / name, sha256=sha256)
    try:  # MNIST's labels let the loader label (and verify) the binarized images
        _mnist(root)
    except DataError as exc:
        log.warning("binarized MNIST will be unlabelled: %s", exc)
    return folder


def _cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if all((folder / n).is_file() for n in names):
        return folder
    archive = fetch(CIFAR10_URL, root / "cifar-10-python.tar.gz", md5=CIFAR10_MD5)
    return extract_tar(archive, root, "cifar-10-batches-py")


MANUAL = {
    f"imagenet{size}": f"ImageNet {size}x{size} needs an image-net.org login: from "
    f"https://image-net.org/data/downsample/ download {archives}Imagenet{size}_val_npz.zip "
    "(Downsampled ImageNet, Chrabaszcz et al. 2017), unzip them and move the .npz files inside "
    f"so that {{root}}/imagenet{size}/train_data_batch_1.npz ... train_data_batch_10.npz and "
    f"{{root}}/imagenet{size}/val_data.npz exist"
    for size, archives in (
        (32, "Imagenet32_train_npz.zip, "),
        (64, "Imagenet64_train_part1_npz.zip, Imagenet64_train_part2_npz.zip, "),
    )
} | {
    "celeba": "CelebA is shared through Google Drive and cannot be fetched automatically: from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html download Img/img_align_celeba.zip and "
    "Eval/list_eval_partition.txt, and unpack them so that {root}/celeba/img_align_celeba/"
    "000001.jpg and {root}/celeba/list_eval_partition.txt exist",
    "folder": "an image folder is local data: put the images under {root}",
}
AUTOMATIC = {
    "mnist": _mnist,
    "mnist-dynamic": _mnist,
    "mnist-static": _binarized_mnist,
    "cifar10": _cifar10,
}


def download(name: str, root: str | Path) -> Path:
    """Fetch dataset ``name`` into ``root`` in the layout :mod:`acn.data.formats.base` reads.

    Returns:
        The dataset's folder.

    Raises:
        DataError: a failed download, or a dataset that must be fetched by hand (the message
            says which archive to download and where to unpack it).
    """
    root = Path(root)
    if name == "digits":  # bundled with scikit-learn
        return root
    if name in MANUAL:
        raise DataError(MANUAL[name].format(root=root))
    if name not in AUTOMATIC:
        valid = ", ".join(["digits", *AUTOMATIC, *MANUAL])
        raise DataError(f"unknown dataset {name!r}; valid: {valid}")
    root.mkdir(parents=True, exist_ok=True)
    return AUTOMATIC[name](root)
