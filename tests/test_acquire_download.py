"""Downloads against a local HTTP server on 127.0.0.1: resume after a cut connection (same bytes), a checksum
mismatch refused by name, nothing half-written under a final name, progress in the log."""

import hashlib
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import acquire_fixtures as fx
from fairseq_xlm.acquire.download import Fetcher, Remote
from fairseq_xlm.cli import get_data
from fairseq_xlm.errors import DataSourceError


class Handler(BaseHTTPRequestHandler):
    """GET with Range support; ``server.cuts[path]`` lists byte counts after which successive responses to
    that path drop the connection; every request's (path, Range header) is kept in ``server.requests``."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cuts = srv.cuts.get(self.path)
        if cuts:
            self.wfile.write(body[:cuts.pop(0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.cuts, srv.requests, srv.ranges = {}, {}, [], True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


DUMP_PATH = "/enwiki/latest/enwiki-latest-pages-articles.xml.bz2"
SUMS_PATH = "/enwiki/latest/enwiki-latest-sha1sums.txt"


def publish_dump(srv, tmp_path, sha1=None):
    data = fx.wiki_dump(tmp_path).read_bytes()
    srv.files[DUMP_PATH] = data
    srv.files[SUMS_PATH] = (f"{'0' * 40}  enwiki-20240601-pages-articles-multistream.xml.bz2\n"
                            f"{sha1 or hashlib.sha1(data).hexdigest()}  enwiki-20240601-pages-articles.xml.bz2\n").encode()
    return data


def test_cut_connection_resumes_to_the_same_bytes(server, tmp_path, caplog):
    data = publish_dump(server, tmp_path)
    server.cuts[DUMP_PATH] = [len(data) // 3, len(data) // 3]  # two cuts, then the rest
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        get_data.main(["wiki", "--langs", "en", "--out", str(out), "--mirror", server.url, "--retries", "2",
                       "--retry-wait", "0", "--processes", "1"])
    dump = out / "downloads" / "enwiki-latest-pages-articles.xml.bz2"
    assert dump.read_bytes() == data and not (out / "downloads" / (dump.name + ".part")).exists()
    ranges = [r for p, r in server.requests if p == DUMP_PATH]
    third = len(data) // 3
    assert ranges == [None, f"bytes={third}-", f"bytes={2 * third}-"]
    assert fx.lines(out / "wiki" / "en.txt") == fx.WIKI_EN
    entry = json.loads((out / "downloads" / "ledger.json").read_text())[dump.name]
    assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["sha1_verified"] == hashlib.sha1(data).hexdigest() and entry["url"] == server.url + DUMP_PATH
    assert f"connection lost at byte {third}" in caplog.text and f"(resuming at byte {2 * third})" in caplog.text


def test_a_rerun_resumes_the_part_file_and_shows_progress(server, tmp_path, caplog):
    data = bytes(range(256)) * 4096  # 1 MiB
    server.files["/f.bin"] = data
    server.cuts["/f.bin"] = [300_000]
    remote = Remote(name="f.bin", url="https://example.org/f.bin")
    fetcher = Fetcher(str(tmp_path), mirror=server.url, retries=0, retry_wait=0, progress_every=0)
    with pytest.raises(DataSourceError, match=r"f\.bin: download failed after 1 tries .*rerun to resume .*f\.bin\.part from byte 300000"):
        fetcher.get(remote)
    final = tmp_path / "downloads" / "f.bin"
    assert not final.exists() and (tmp_path / "downloads" / "f.bin.part").stat().st_size == 300_000
    caplog.set_level(logging.INFO)
    assert fetcher.get(remote) == str(final)
    assert final.read_bytes() == data and server.requests[-1] == ("/f.bin", "bytes=300000-")
    assert "f.bin.part: 1.0 MiB of 1.0 MiB (100%)" in caplog.text  # progress lines (every chunk here)
    asked = len(server.requests)
    fetcher.get(remote)  # recorded in the ledger with this size and mtime: reused, the server is not asked
    assert len(server.requests) == asked
    # A .part that is already whole (killed before its rename): the server answers 416 and it is kept.
    (tmp_path / "downloads" / "h.bin.part").write_bytes(data)
    server.files["/h.bin"] = data
    fetcher.get(Remote("h.bin", "http://x/h.bin"))
    assert server.requests[-1] == ("/h.bin", f"bytes={len(data)}-")
    assert (tmp_path / "downloads" / "h.bin").read_bytes() == data
    # A server that ignores Range: the .part restarts from byte 0, still the same bytes.
    server.ranges = False
    server.cuts["/g.bin"] = [1000]
    server.files["/g.bin"] = data
    with pytest.raises(DataSourceError):
        Fetcher(str(tmp_path), mirror=server.url, retries=0).get(Remote("g.bin", "http://x/g.bin"))
    assert (tmp_path / "downloads" / "g.bin.part").stat().st_size == 1000
    Fetcher(str(tmp_path), mirror=server.url).get(Remote("g.bin", "http://x/g.bin"))
    assert (tmp_path / "downloads" / "g.bin").read_bytes() == data
    assert "the server ignored the range request; downloading from the start" in caplog.text


def test_checksum_mismatch_is_refused_by_name(server, tmp_path):
    publish_dump(server, tmp_path, sha1="f" * 40)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        get_data.main(["wiki", "--langs", "en", "--out", str(out), "--mirror", server.url, "--processes", "1"])
    dump = out / "downloads" / "enwiki-latest-pages-articles.xml.bz2"
    message = str(exc.value)
    assert message.startswith(f"error: {dump}: sha1 ") and f"says {'f' * 40}" in message and "\n" not in message
    assert not dump.exists() and (out / "downloads" / (dump.name + ".corrupt")).exists()
    assert not (out / "wiki" / "en.txt").exists()
    # A user's --checksums for a --from file, and a file the server does not have.
    src = tmp_path / "src"
    src.mkdir()
    archive = fx.opus_zip(src)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'a' * 64}  {archive.name}\n")
    with pytest.raises(SystemExit, match=rf"error: {archive}: sha256 [0-9a-f]{{64}} but --checksums says a{{64}}"):
        get_data.main(["para", "--pairs", "en-fr", "--out", str(out), "--from", str(src), "--checksums", str(sums)])
    with pytest.raises(SystemExit, match=r"HTTP 404 .*MultiUN\.en-fr\.txt\.zip with --from DIR"):
        get_data.main(["para", "--pairs", "en-fr", "--out", str(out), "--mirror", server.url, "--retries", "0"])
