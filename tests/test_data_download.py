"""nmt.data.download with a fake URL opener (no network)."""
from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error

import pytest

from nmt.config import DataConfig
from nmt.data import download
from nmt.data.errors import DataError

TEXTS = {f"{split}.{lang}": f"{split} {lang} line 1\n{split} {lang} line 2\n".encode()
         for split in ("train", "valid", "test2016") for lang in ("en", "de")}


@pytest.fixture
def fake_corpus(monkeypatch):
    """A known corpus 'tiny' whose sums match TEXTS, served by a fake opener; returns the
    list of requested URLs."""
    remote = {"train": "train", "valid": "val", "test2016": "test_2016_flickr"}
    files = {name: (f"{remote[name.split('.')[0]]}.{name.split('.')[1]}.gz",
                    hashlib.sha256(data).hexdigest()) for name, data in TEXTS.items()}
    spec = download.CorpusSpec("https://example.invalid/raw/", ("train", "valid", "test2016"),
                               ("en", "de"), files)
    monkeypatch.setitem(download.KNOWN_CORPORA, "tiny", spec)
    served = {"https://example.invalid/raw/" + remote_name: gzip.compress(TEXTS[name])
              for name, (remote_name, _) in files.items()}
    requested = []

    def opener(url, timeout=None):
        requested.append(url)
        return io.BytesIO(served[url])

    monkeypatch.setattr(download, "urlopen", opener)
    return requested


def test_good_sums_write_files(tmp_path, fake_corpus):
    dest = download.download_corpus("tiny", tmp_path / "tiny")
    for name, data in TEXTS.items():
        assert (dest / name).read_bytes() == data
    assert len(fake_corpus) == 6
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temp files left
    download.download_corpus("tiny", dest)  # present with the right sum: skipped
    assert len(fake_corpus) == 6


def test_bad_sum_raises_and_writes_nothing(tmp_path, fake_corpus, monkeypatch):
    spec = download.KNOWN_CORPORA["tiny"]
    files = dict(spec.files, **{"train.en": (spec.files["train.en"][0], "0" * 64)})
    monkeypatch.setitem(download.KNOWN_CORPORA, "tiny", download.CorpusSpec(
        spec.base_url, spec.splits, spec.langs, files))
    with pytest.raises(DataError) as err:
        download.download_corpus("tiny", tmp_path, langs=["en"])
    msg = str(err.value)
    actual = hashlib.sha256(TEXTS["train.en"]).hexdigest()
    assert "train.en" in msg and "0" * 64 in msg and actual in msg
    assert not (tmp_path / "train.en").exists()
    assert list(tmp_path.iterdir()) == []


def test_no_network_message(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(download, "urlopen", offline)
    monkeypatch.delenv("NMT_DATA_DIR", raising=False)
    cfg = DataConfig(dir=str(tmp_path / "m30k"))
    with pytest.raises(DataError) as err:
        download.ensure_corpus(cfg)
    msg = str(err.value)
    assert str(tmp_path / "m30k") in msg and "NMT_DATA_DIR" in msg
    assert str(tmp_path / "m30k" / "train.en") in msg
    assert "{train,valid,test2016}.{en,de}" in msg
    assert "python scripts/download_data.py multi30k" in msg and "no route to host" in msg


def test_ensure_corpus_downloads_then_returns(tmp_path, fake_corpus):
    cfg = DataConfig(corpus="tiny", dir=str(tmp_path / "t"))
    assert download.ensure_corpus(cfg) == tmp_path / "t"
    assert (tmp_path / "t" / "valid.de").read_bytes() == TEXTS["valid.de"]
    n = len(fake_corpus)
    download.ensure_corpus(cfg)  # everything present: no request
    assert len(fake_corpus) == n


def test_unknown_corpus_and_download_off(tmp_path):
    with pytest.raises(DataError, match="cannot be downloaded"):
        download.ensure_corpus(DataConfig(corpus="mine", dir=str(tmp_path)))
    with pytest.raises(DataError, match="download=false"):
        download.ensure_corpus(DataConfig(dir=str(tmp_path), download=False))


def test_multi30k_table_matches_source_md():
    spec = download.KNOWN_CORPORA["multi30k"]
    assert spec.files["valid.de"] == ("val.de.gz", "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660")
    assert spec.files["test2016.cs"][0] == "test_2016_flickr.cs.gz"
    assert len(spec.files) == 12


def test_cli_main(tmp_path, fake_corpus):
    assert download.main(["tiny", "--dest", str(tmp_path / "x"), "--langs", "de"]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["test2016.de", "train.de", "valid.de"]
