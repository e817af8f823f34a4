# tests/etcd_proxy.py TARGET_PORT [DELAY] — a TCP proxy on loopback in front of
# one etcd member, for a test that needs a reply late: it prints "listening
# PORT", then forwards both ways until told, on stdin, "hold SECONDS". From
# then the first reply from etcd (what arrives within 50 ms of its first byte)
# is passed on SECONDS after it arrived, and after that nothing more goes
# either way (the member is as good as gone); it prints "held T" with T the
# time (CLOCK_MONOTONIC, seconds) the reply arrived. With DELAY, each
# connection's first reply is passed on DELAY seconds late (over TLS: the
# server's hello, a slow handshake). Ends at end of input.
import select
import socket
import sys
import threading
import time

target = ("127.0.0.1", int(sys.argv[1]))
first_delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
mode = "forward"            # then "hold", then "gone"
lock = threading.Lock()


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def to_client(server, client):
    global mode
    first = True
    while True:
        data = server.recv(65536)
        if not data:
            break
        if first and first_delay_s > 0:
            time.sleep(first_delay_s)
        first = False
        with lock:
            current = mode
            if current == "hold":
                mode = "gone"
        if current == "gone":
            continue
        if current == "hold":
            arrived = time.monotonic()
            while select.select([server], [], [], 0.05)[0]:
                more = server.recv(65536)
                if not more:
                    break
                data += more
            say("held %.6f" % arrived)
            time.sleep(max(0.0, arrived + hold_s - time.monotonic()))
        client.sendall(data)


def to_server(client, server):
    while True:
        data = client.recv(65536)
        if not data:
            break
        with lock:
            if mode == "gone":
                continue
        server.sendall(data)


def serve(client):
    server = socket.create_connection(target)
    for pump in (lambda: to_client(server, client), lambda: to_server(client, server)):
        threading.Thread(target=pump, daemon=True).start()


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
say("listening %d" % listener.getsockname()[1])


def accept():
    while True:
        client, _ = listener.accept()
        serve(client)


threading.Thread(target=accept, daemon=True).start()
hold_s = 0.0
for line in sys.stdin:
    words = line.split()
    if words[:1] == ["hold"]:
        hold_s = float(words[1])
        with lock:
            mode = "hold"
