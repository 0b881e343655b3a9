"""Fetch a known corpus (Multi30k task 1, raw) and verify it by sha256.

Each file is downloaded as ``.gz``, decompressed in memory, checked against the sha256 of the
decompressed text (the digests below, recorded when the corpus was first fetched) and written atomically
(temp file in the same folder, fsync, ``os.replace``, folder fsync; RELIABILITY.md R1), so a
failed or corrupt download never leaves a file under its final name.

Command line: ``nmt-data multi30k [--dest DIR] [--langs en de]`` or
``python scripts/download_data.py multi30k``.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.request import urlopen  # module attribute so tests can replace it

from nmt.config import DataConfig
from nmt.io import atomic_write_bytes
from nmt.data.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusSpec:
    """A downloadable corpus: ``files`` maps local name -> (remote name, sha256 of the text)."""

    base_url: str
    splits: tuple[str, ...]
    langs: tuple[str, ...]
    files: dict[str, tuple[str, str]]


_M30K_REMOTE = {"train": "train", "valid": "val", "test2016": "test_2016_flickr"}
_M30K_SHA256 = {
    "test2016.cs": "45adb85f688de8407fddcbe1b36dca15d12aab868149b337e2576f2d6d2ff8d8",
    "test2016.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test2016.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test2016.fr": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
    "train.cs": "2be68b38c8d586ff4f54eb13cc6e1baaaa053695b3f070d3038303a47f2268da",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.fr": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "valid.cs": "d53827e469b0a1ca8d57e9e26b2b64c4bc4b33f5479c7b03ae87ae5c882c3e33",
    "valid.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "valid.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "valid.fr": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
}

KNOWN_CORPORA: dict[str, CorpusSpec] = {
    "multi30k": CorpusSpec(
        base_url="https://raw.githubusercontent.com/multi30k/dataset/"
                 "a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/",
        splits=("train", "valid", "test2016"),
        langs=("en", "de", "fr", "cs"),
        files={local: (f"{_M30K_REMOTE[local.split('.')[0]]}.{local.split('.')[1]}.gz", sha)
               for local, sha in _M30K_SHA256.items()},
    ),
}


def resolve_data_dir(corpus: str, dir: Optional[str | Path] = None) -> Path:  # noqa: A002
    """Folder holding ``corpus``: ``dir`` if given, else ``$NMT_DATA_DIR/<corpus>``, else
    ``<project root>/data/<corpus>`` (project root = parent of the ``nmt`` package)."""
    if dir:
        return Path(dir).expanduser()
    env = os.environ.get("NMT_DATA_DIR")
    if env:
        return Path(env).expanduser() / corpus
    return Path(__file__).resolve().parents[2] / "data" / corpus


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadError(DataError):
    """A network or transfer failure (as opposed to a checksum mismatch)."""


def _fetch(url: str, timeout: float) -> bytes:
    """Bytes at ``url``; DownloadError on any network failure."""
    try:
        with urlopen(url, timeout=timeout) as response:
            return response.read()
    except Exception as err:  # URLError, HTTPError, timeouts, connection resets, ...
        raise DownloadError(f"cannot download {url}: {type(err).__name__}: {err}") from err


def download_corpus(corpus: str, dest: Path | str, langs: Optional[Iterable[str]] = None,
                    timeout: float = 30) -> Path:
    """Download ``corpus`` into ``dest`` (files ``{split}.{lang}``), verified by sha256.

    Files already present with the right sum are skipped. Returns ``dest``.

    Args:
        langs: languages to fetch (default: all of the corpus).
        timeout: seconds per network operation.
    Raises:
        DataError: unknown corpus or language; a sum mismatch (naming the file, the expected
            and the actual sum; nothing is written under the final name).
        DownloadError: (a DataError) a network failure.
    """
    spec = KNOWN_CORPORA.get(corpus)
    if spec is None:
        raise DataError(f"unknown corpus {corpus!r}; known: {sorted(KNOWN_CORPORA)}")
    langs = tuple(langs) if langs else spec.langs
    unknown = [lang for lang in langs if lang not in spec.langs]
    if unknown:
        raise DataError(f"corpus {corpus!r} has no language {unknown}; available: {list(spec.langs)}")
    dest = Path(dest)
    for split in spec.splits:
        for lang in langs:
            local = f"{split}.{lang}"
            remote, expected = spec.files[local]
            target = dest / local
            if target.is_file():
                if sha256_file(target) == expected:
                    logger.info("%s: present, sha256 ok", target)
                    continue
                logger.warning("%s: sha256 differs from the known sum; downloading again", target)
            url = spec.base_url + remote
            logger.info("downloading %s -> %s", url, target)
            packed = _fetch(url, timeout)
            try:
                data = gzip.decompress(packed)
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"{url}: not a valid gzip file ({err}); {target} was not written") from err
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise DataError(f"{target}: sha256 mismatch for {url}: expected {expected}, "
                                f"got {actual}; the file was not written")
            atomic_write_bytes(target, data)
    return dest


def _required(cfg: DataConfig, splits: Sequence[str]) -> list[str]:
    """File names ``{split}.{lang}`` the config needs."""
    names = dict.fromkeys([cfg.train_split, cfg.valid_split, cfg.test_split, *splits])
    return [f"{s}.{lang}" for s in names for lang in (cfg.src_lang, cfg.tgt_lang)]


def _missing_message(cfg: DataConfig, folder: Path, missing: list[Path], splits: Sequence[str],
                     cause: str) -> str:
    splits = ",".join(dict.fromkeys([cfg.train_split, cfg.valid_split, cfg.test_split, *splits]))
    lines = [f"missing data files for corpus {cfg.corpus!r}:", *[f"  {p}" for p in missing],
             "Fix one of:",
             f"  - put the files `{{{splits}}}.{{{cfg.src_lang},{cfg.tgt_lang}}}` in {folder}",
             f"  - set data.dir=... or NMT_DATA_DIR=<folder containing {cfg.corpus}/>"]
    if cfg.corpus in KNOWN_CORPORA:
        lines.append(f"  - run `python scripts/download_data.py {cfg.corpus}` with network access")
    if cause:
        lines.append(f"({cause})")
    return "\n".join(lines)


def ensure_corpus(cfg: DataConfig, splits: Sequence[str] = ()) -> Path:
    """The data folder of ``cfg`` once its split files exist, downloading a known corpus.

    Checks ``{train,valid,test}_split`` (and extra ``splits``) x ``{src_lang, tgt_lang}`` in
    :func:`resolve_data_dir`. When some are missing and ``cfg.download`` is set and the corpus
    is known, downloads the two languages into that folder.

    Raises:
        DataError: files still missing; the message lists them and the three ways to fix it.
    """
    folder = resolve_data_dir(cfg.corpus, cfg.dir)
    missing = [folder / name for name in _required(cfg, splits) if not (folder / name).is_file()]
    if not missing:
        return folder
    cause = ""
    if cfg.corpus not in KNOWN_CORPORA:
        cause = f"corpus {cfg.corpus!r} cannot be downloaded automatically"
    elif not cfg.download:
        cause = "automatic download is off (data.download=false)"
    else:
        logger.info("%d data files missing in %s; downloading %s (%s-%s)", len(missing), folder,
                    cfg.corpus, cfg.src_lang, cfg.tgt_lang)
        try:
            download_corpus(cfg.corpus, folder, langs=[cfg.src_lang, cfg.tgt_lang])
        except DataError as err:
            cause = f"download failed: {err}"
        missing = [p for p in missing if not p.is_file()]
        if not missing:
            return folder
    raise DataError(_missing_message(cfg, folder, missing, splits, cause))


def build_parser() -> argparse.ArgumentParser:
    """The options of ``nmt-data`` (also rendered into ``docs/cli.md``)."""
    parser = argparse.ArgumentParser(prog="nmt-data", description="Download a known parallel corpus.")
    parser.add_argument("corpus", choices=sorted(KNOWN_CORPORA))
    parser.add_argument("--dest", default=None, help="target folder (default: where training looks: "
                        "$NMT_DATA_DIR/<corpus>, else <project>/data/<corpus>)")
    parser.add_argument("--langs", nargs="+", default=None, help="languages (default: all)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nmt-data CORPUS [--dest DIR] [--langs L ...]``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    dest = resolve_data_dir(args.corpus, args.dest)
    try:
        download_corpus(args.corpus, dest, langs=args.langs, timeout=args.timeout)
    except DataError as err:
        logger.error("%s", err)
        return 1
    logger.info("%s is ready in %s", args.corpus, dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
