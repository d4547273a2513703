"""`audioembed data` and the data home, against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import audio_gen

from audioembed import datasets
from audioembed.cli import main
from audioembed.datasets import Dataset, DatasetError, RemoteFile
from audioembed.download import install

MAX_REQUESTS = 40


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; ``server.cut`` names files whose first
    full response stops half way (an interrupted download)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, self.headers.get("Range")))
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path.lstrip("/") in self.server.cut and not self.headers.get("Range"):
            self.server.cut.discard(self.path.lstrip("/"))
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback server that answers at most MAX_REQUESTS requests and stops with the test."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Files)
    httpd.files, httpd.cut, httpd.requests = {}, set(), []
    httpd.timeout = 0.2

    def serve():
        for _ in range(MAX_REQUESTS):
            if httpd.stop:
                break
            httpd.handle_request()

    httpd.stop = False
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield httpd
    httpd.stop = True
    thread.join(timeout=10)
    httpd.server_close()


def _url(httpd, name):
    return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"


def _fsdd_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for i, (digit, speaker) in enumerate([("0", "jackson"), ("1", "jackson"), ("0", "nicolas"), ("1", "nicolas")]):
            wav = io.BytesIO()
            import soundfile as sf

            sf.write(wav, audio_gen.tone(300.0 + 100 * i, 0.3, 8000), 8000, format="WAV")
            data = wav.getvalue()
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-1.0.10/recordings/{digit}_{speaker}_{i}.wav")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _fsdd(httpd, sha256) -> Dataset:
    base = datasets.DATASETS["fsdd"]
    return Dataset(base.name, base.title, base.tasks, base.layout, base.licence, base.homepage,
                   files=(RemoteFile(_url(httpd, "fsdd.tar.gz"), sha256),), data_path=base.data_path,
                   prepare=base.prepare, size="1 kB")


def test_get_resumes_an_interrupted_download_and_prepares_the_layout(server, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOEMBED_DATA", str(tmp_path / "home"))
    archive = _fsdd_archive()
    server.files["fsdd.tar.gz"] = archive
    server.cut.add("fsdd.tar.gz")
    dataset = _fsdd(server, hashlib.sha256(archive).hexdigest())
    with pytest.raises(DatasetError, match="rerun the same command to resume"):
        install(dataset, progress=False, log=lambda m: None)
    part = tmp_path / "home" / "fsdd" / ".downloads" / "fsdd.tar.gz.part"
    assert part.stat().st_size == len(archive) // 2
    path = install(dataset, progress=False, log=lambda m: None)
    assert server.requests[-1][1] == f"bytes={len(archive) // 2}-"  # the second request continued
    assert path == tmp_path / "home" / "fsdd" / "labels.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "path,label,digit,speaker,index" and len(lines) == 5
    assert lines[1].startswith("free-spoken-digit-dataset-1.0.10/recordings/0_jackson_0.wav,0,0,jackson,0")
    assert datasets.default_data_for_task("classify") == path
    assert not (tmp_path / "home" / "fsdd" / ".downloads").exists()


def test_checksum_mismatch_removes_the_file_and_says_so(server, tmp_path):
    server.files["fsdd.tar.gz"] = _fsdd_archive()
    dataset = _fsdd(server, "0" * 64)
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        install(dataset, progress=False, log=lambda m: None, folder=tmp_path / "fsdd")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "fsdd" / ".downloads").iterdir())
    assert not (tmp_path / "fsdd" / "labels.csv").exists()


def test_a_file_without_published_checksum_is_downloaded_and_said_unverified(server, tmp_path):
    server.files["fsdd.tar.gz"] = _fsdd_archive()
    dataset = _fsdd(server, None)
    logged = []
    install(dataset, progress=False, log=logged.append, folder=tmp_path / "fsdd")
    assert (tmp_path / "fsdd" / "labels.csv").exists()
    assert "fsdd: no published checksum for fsdd.tar.gz: the download is not verified" in logged


def test_md5_is_checked_where_only_that_is_published(server, tmp_path):
    archive = _fsdd_archive()
    server.files["fsdd.tar.gz"] = archive
    base = _fsdd(server, None)

    def with_md5(md5):
        return Dataset(base.name, base.title, base.tasks, base.layout, base.licence, base.homepage,
                       files=(RemoteFile(base.files[0].url, md5=md5),), data_path=base.data_path, prepare=base.prepare)

    with pytest.raises(DatasetError, match=r"checksum mismatch \(MD5 [0-9a-f]{32}, expected 0{32}\)"):
        install(with_md5("0" * 32), progress=False, log=lambda m: None, folder=tmp_path / "bad")
    logged = []
    install(with_md5(hashlib.md5(archive).hexdigest()), progress=False, log=logged.append, folder=tmp_path / "good")
    assert (tmp_path / "good" / "labels.csv").exists()
    assert not [line for line in logged if "not verified" in line]


def test_no_verify_skips_published_checksums_and_says_so(server, tmp_path):
    server.files["fsdd.tar.gz"] = _fsdd_archive()
    logged = []
    install(_fsdd(server, "0" * 64), verify=False, progress=False, log=logged.append, folder=tmp_path / "fsdd")
    assert (tmp_path / "fsdd" / "labels.csv").exists()
    assert "fsdd: --no-verify: the download is not verified" in logged


def test_pinned_checksums_are_well_formed_and_the_rest_are_announced():
    """A typo in a pinned digest would make every download fail; a file without one must be announced."""
    from audioembed.download import unverified_notice

    pinned = 0
    for dataset in datasets.DATASETS.values():
        for remote in dataset.files:
            if remote.sha256 is not None:
                assert len(remote.sha256) == 64 and set(remote.sha256) <= set("0123456789abcdef"), remote.url
            if remote.md5 is not None:
                assert len(remote.md5) == 32 and set(remote.md5) <= set("0123456789abcdef"), remote.url
            pinned += remote.checksum is not None
        notice = unverified_notice(dataset)
        if dataset.downloadable and any(f.checksum is None for f in dataset.files):
            assert notice and "the download is not verified" in notice
        else:
            assert notice is None
    assert pinned >= 5  # GTZAN, RAVDESS, Speech Commands and LibriSpeech's archives
    assert datasets.DATASETS["gtzan"].files[0].checksum[0] == "sha256"
    assert datasets.DATASETS["ravdess"].files[0].checksum[0] == "md5"


def test_archive_members_outside_the_folder_are_refused(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.txt", "x")
    body = buffer.getvalue()
    server.files["evil.zip"] = body
    dataset = Dataset("evil", "t", ("classify",), "layout", "licence", "home",
                      files=(RemoteFile(_url(server, "evil.zip"), hashlib.sha256(body).hexdigest(), unpack="zip"),))
    with pytest.raises(DatasetError, match="outside"):
        install(dataset, progress=False, log=lambda m: None, folder=tmp_path / "evil")
    assert not (tmp_path / "evil.txt").exists()


def test_cli_get_shows_the_licence_then_path_and_list(server, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOEMBED_DATA", str(tmp_path / "home"))
    archive = _fsdd_archive()
    server.files["fsdd.tar.gz"] = archive
    monkeypatch.setitem(datasets.DATASETS, "fsdd", _fsdd(server, hashlib.sha256(archive).hexdigest()))
    runner = CliRunner()
    result = runner.invoke(main, ["data", "get", "fsdd", "-q"], input="n\n")
    assert result.exit_code != 0 and "licence: CC BY-SA 4.0" in result.output and not server.requests
    result = runner.invoke(main, ["data", "get", "fsdd", "-y", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.index("licence:") < result.output.index("labels.csv")
    result = runner.invoke(main, ["data", "path", "fsdd"])
    assert result.output.strip() == str(tmp_path / "home" / "fsdd" / "labels.csv")
    result = runner.invoke(main, ["data", "list"])
    line = next(l for l in result.output.splitlines() if l.strip().startswith("fsdd "))
    assert "installed" in line and "not installed" not in line
    for name in ("gtzan", "giantsteps_key", "magnatagatune", "emodb", "ravdess", "crema_d", "librispeech",
                 "speech_commands", "esc50", "fsdd"):
        assert f"  {name} " in result.output
    assert "download: SHA-256 checked" in result.output and "download: no published checksum" in result.output


def test_unknown_dataset_and_manual_dataset_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOEMBED_DATA", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(main, ["data", "get", "nope"])
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output
    result = runner.invoke(main, ["data", "get", "crema_d", "-y"])
    assert result.exit_code == 1 and "git lfs" in result.output and str(tmp_path / "crema_d") in result.output


def test_downstream_without_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOEMBED_DATA", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["downstream", "genre", "--shots", "8", "-o", str(tmp_path / "results")])
    assert result.exit_code == 1
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1, result.output
    assert str(tmp_path / "home" / "gtzan") in lines[0] and "<genre>" in lines[0]
    assert "audioembed data get gtzan" in lines[0]


@pytest.mark.slow
def test_downstream_genre_shots_8_runs_as_typed(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("AUDIOEMBED_DATA", str(home))
    monkeypatch.setenv("AUDIOEMBED_CACHE", str(tmp_path / "cache"))
    for g, genre in enumerate(("blues", "rock")):
        for i in range(5):
            audio_gen.write_audio(home / "gtzan" / "genres" / genre / f"{genre}.{i:05d}.wav",
                                  audio_gen.tone(200.0 * (g + 1) + 10 * i, 1.0, 16000), 16000)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["downstream", "genre", "--shots", "8"])
    assert result.exit_code == 0, result.output
    assert "genre / unified_student" in result.output
    assert list((tmp_path / "results").glob("genre_unified-student_*.json"))
