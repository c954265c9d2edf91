"""TCP forwarders to the test cluster (``tests/pgserver.py``) for fault tests:
the base that accepts on 127.0.0.1 and connects each client to the upstream
port, and :class:`Blackhole`, whose link can be cut (a partition).
``tests/test_pgstore.py``'s ``CuttingProxy`` is another kind of forwarder."""

from __future__ import annotations

import contextlib
import socket
import threading


class Forwarder:
    """Listens on 127.0.0.1 (its ``port``); each client accepted is joined to
    a new connection to ``upstream_port`` by two threads running ``_pump``
    (client to server, then server to client). A subclass sets its own
    attributes before calling ``__init__`` (the accepting thread starts
    there) and overrides ``_pump``; sockets it appends to ``_held`` are closed
    by :meth:`close` and by nothing else."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self._held: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            pair = {"faulty": False}  # shared by the pair's two pumps
            threading.Thread(target=self._pump, args=(client, server, True, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool, pair: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close every held connection (shut down first: a thread blocked in
        ``recv`` on one would keep it open) and the listener (the same for
        ``accept``). Closing again does nothing more."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self._held:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class Blackhole(Forwarder):
    """A forwarder whose link can be cut: once ``cut`` is set nothing more
    passes either way, and no socket is closed until :meth:`close` (a
    partition: neither end hears from the other)."""

    def __init__(self, upstream_port: int) -> None:
        self.cut = threading.Event()
        super().__init__(upstream_port)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool, pair: dict) -> None:
        self._held.append(src)  # closed by close(), never before
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.cut.is_set():
                    dst.sendall(data)
