"""An HTTP server on loopback that records what push providers post (tests of push@)."""

import http.server
import threading
import time


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers with the statuses
    queued in `answers` (then 200)."""

    def __init__(self, context=None):
        self.requests = []
        self.answers = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(
                        (k.lower(), v) for k, v in self.headers.items()), "body": body,
                        "raw_headers": str(self.headers)})
                    status, text = receiver.answers.pop(0) if receiver.answers else (200, "{}")
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def clear(self):
        with self.lock:
            self.requests.clear()
            self.answers.clear()

    def wait(self, n, timeout=8, quiet=1.0):
        """Waits for n requests, then checks that no more come within `quiet` seconds;
        returns them."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(quiet)
        with self.lock:
            got = list(self.requests)
        assert len(got) == n, "expected %d push requests, got %d: %r" % (n, len(got), got)
        return got
