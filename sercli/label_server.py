"""The local web page of ``sercli label``: one clip at a time, one key press per label.

Safe by default: the server listens on 127.0.0.1 only, every URL carries a random token,
requests whose ``Host`` is not the loopback address are refused (DNS rebinding), and a
clip is asked for by its number in the queue, so nothing in a request reaches the file
system. Labels go to a :class:`~sercli.labeling.LabelBook` as they are given.
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np

from .labeling import Clip, LabelBook

__all__ = ["LabelSession", "LabelServer"]

#: Points of the waveform the page draws (pairs of min and max).
PEAKS = 300
#: The largest request body accepted (bytes).
MAX_BODY = 10_000


class LabelSession:
    """The clips chosen for labelling, the labels given, and what the page shows next.

    ``target``: labels per class to aim for (the page says when every class has them);
    ``minimum``: what fine-tuning needs at least; ``purpose``: ``"train"`` (labels to fine-tune
    on) or ``"test"`` (a test set: the page says how to score with it); ``command``: what to
    run with the labels.
    """

    def __init__(self, clips: list[Clip], book: LabelBook, *, target: int, minimum: int, command: str,
                 purpose: str = "train") -> None:
        self.clips = clips
        self.book = book
        self.target = target
        self.minimum = minimum
        self.command = command
        self.purpose = purpose
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._keys = {book.key(c) for c in clips}

    def pending(self) -> list[Clip]:
        done = self.book.done()
        return [c for c in self.clips if self.book.key(c) not in done]

    def state(self) -> dict:
        """What the page shows: the next clip, the counts per class, whether they are enough."""
        with self._lock:
            pending = self.pending()
            counts = self.book.counts()
        nxt = pending[0] if pending else None
        return {"classes": self.book.classes, "counts": counts, "target": self.target, "minimum": self.minimum,
                "ready": all(counts.get(c, 0) >= self.target for c in self.book.classes),
                "enough": all(counts.get(c, 0) >= self.minimum for c in self.book.classes),
                "labelled": sum(counts.values()), "remaining": len(pending),
                "command": self.command, "purpose": self.purpose,
                "clip": None if nxt is None else _describe(nxt, blind=self.purpose == "test")}

    def label(self, clip_id: int, label: str | None) -> None:
        """Label (``None``: skip) the clip ``clip_id``; it must be pending. Raises ``ValueError``
        (a clip labelled already, an unknown class, a finished session), ``OSError`` (the label
        file cannot be written) and :class:`~sercli.audio.DecodeError` (a segment cannot be cut)."""
        with self._lock:
            self._check_open()
            clip = self.clip(clip_id)
            if self.book.key(clip) in self.book.done():
                raise ValueError(f"clip {clip_id} is labelled already.")
            self.book.add(clip, label)

    def undo(self) -> None:
        """Forget the last label given to one of this session's clips."""
        with self._lock:
            self._check_open()
            self.book.undo(self._keys)

    def close(self) -> None:
        """No more labels: the command is printing its summary."""
        with self._lock:
            self.finished.set()

    def _check_open(self) -> None:
        if self.finished.is_set():
            raise ValueError("this labelling session has finished; run sercli label again to go on.")

    def clip(self, clip_id: int) -> Clip:
        if not 0 <= clip_id < len(self.clips):
            raise KeyError(clip_id)
        return self.clips[clip_id]


def _describe(clip: Clip, *, blind: bool = False) -> dict:
    """What the page shows of a clip; ``blind`` (a test set): not the model's guess, which would
    sway the reference labels toward the model they will score."""
    return {"id": clip.id, "name": Path(clip.path).name, "folder": Path(clip.path).parent.name,
            "start_s": clip.start_s, "end_s": clip.end_s, "predicted": None if blind else clip.predicted,
            "confidence": None if blind else round(clip.confidence, 3)}


_decoding = threading.Lock()


def _clip_audio(path: str, start_s: float | None, end_s: float | None) -> tuple[bytes, list[float]]:
    """:func:`_decoded` one request at a time (the page asks for a clip and its waveform at once)."""
    with _decoding:
        return _decoded(path, start_s, end_s)


@lru_cache(maxsize=8)
def _decoded(path: str, start_s: float | None, end_s: float | None) -> tuple[bytes, list[float]]:
    """The clip as 16 kHz WAV bytes and its waveform: :data:`PEAKS` (min, max) pairs, flattened,
    scaled so that the loudest sample is 1 (a quiet clip is drawn as large as a loud one)."""
    import soundfile

    from .audio import read_span

    y, sr = read_span(path, start_s, end_s)
    buf = io.BytesIO()
    soundfile.write(buf, y, sr, format="WAV", subtype="PCM_16")
    if len(y) == 0:
        return buf.getvalue(), []
    parts = np.array_split(y / max(float(np.abs(y).max()), 1e-6), min(PEAKS, len(y)))
    peaks = [round(float(v), 3) for p in parts for v in (p.min(), p.max())]
    return buf.getvalue(), peaks


class LabelServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 serving one :class:`LabelSession` under ``/<token>/``.

    ``port=0`` takes a free port; :attr:`url` is the page's address.
    """

    daemon_threads = True

    def __init__(self, session: LabelSession, *, port: int = 0) -> None:
        self.session = session
        self.token = secrets.token_urlsafe(16)
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{self.token}/"


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # the terminal shows progress, not a request log
        pass

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        session = self.server.session
        if route == "":
            page = resources.files("sercli").joinpath("label_page.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif route == "state":
            self._json(session.state())
        elif route.startswith("clip/"):
            self._clip(route[len("clip/"):])
        else:
            self._refuse(HTTPStatus.NOT_FOUND, "no such page")

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "JSON only")
        try:
            length = int(self.headers.get("Content-Length", 0))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY or "Transfer-Encoding" in self.headers:
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > MAX_BODY else HTTPStatus.BAD_REQUEST,
                                "a JSON body of at most 10 kB")
        from .audio import DecodeError

        session = self.server.session
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if route == "label":
                label, clip_id = body.get("label"), body.get("id")
                if not isinstance(clip_id, int) or isinstance(clip_id, bool):
                    raise ValueError("the clip id must be a whole number")
                session.label(clip_id, None if label is None else str(label))
            elif route == "undo":
                session.undo()
            elif route == "finish":  # answered first: the command stops serving once the event is set
                self._json(session.state())
                session.close()
                return
            else:
                return self._refuse(HTTPStatus.NOT_FOUND, "no such action")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return self._refuse(HTTPStatus.BAD_REQUEST, str(exc) or "a malformed request")
        except (OSError, DecodeError) as exc:  # the label file cannot be written, a segment not cut: nothing recorded
            return self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"the label was not saved: {exc}")
        except Exception as exc:  # never a traceback in the user's terminal, always an answer
            return self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        self._json(session.state())

    def _route(self) -> str | None:
        """The path after the token, or ``None`` once a refusal is sent (wrong host or token)."""
        host = self.headers.get("Host", "")
        if host not in (f"127.0.0.1:{self.server.server_address[1]}", f"localhost:{self.server.server_address[1]}"):
            self._refuse(HTTPStatus.FORBIDDEN, "this page answers on 127.0.0.1 only")
            return None
        _, token, *rest = (self.path.split("?", 1)[0] + "/").split("/", 2)
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._refuse(HTTPStatus.FORBIDDEN, "wrong or missing token")
            return None
        return rest[0].rstrip("/") if rest else ""

    def _clip(self, rest: str) -> None:
        number, _, kind = rest.partition("/")
        try:
            clip = self.server.session.clip(int(number.removesuffix(".wav")))
        except (KeyError, ValueError):
            return self._refuse(HTTPStatus.NOT_FOUND, "no such clip")
        from .audio import DecodeError

        try:
            wav, peaks = _clip_audio(clip.path, clip.start_s, clip.end_s)
        except DecodeError as exc:
            return self._refuse(HTTPStatus.UNPROCESSABLE_ENTITY, exc.message)
        if kind == "peaks":
            self._json({"peaks": peaks})
        else:
            self._send(HTTPStatus.OK, wav, "audio/wav")

    def _json(self, data: dict) -> None:
        self._send(HTTPStatus.OK, json.dumps(data).encode(), "application/json")

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        if self.command == "POST":  # its body may be unread: it must not be taken for the next request
            self.close_connection = True
        self._send(status, json.dumps({"error": reason}).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays out of other sites' logs
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)
