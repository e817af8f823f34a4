# tests/bench/certbot_figures.py — certbot's side of scripts/bench (Debian's
# python3-certbot): the same operations, CPU seconds per operation.
#   /usr/bin/python3 certbot_figures.py lock DIR N
#   /usr/bin/python3 certbot_figures.py handler N exit|error
import sys
import time

from certbot._internal import error_handler, lock


def cleanup():
    pass


def lock_cycles(directory, n):
    for _ in range(n):
        lock.lock_dir(directory).release()


def handler_cycles(n, kind):
    handler = error_handler.ErrorHandler if kind == "error" else error_handler.ExitHandler
    for _ in range(n):
        with handler(cleanup):
            pass


mode = sys.argv[1]
start = time.process_time()
if mode == "lock":
    n = int(sys.argv[3])
    lock_cycles(sys.argv[2], n)
elif mode == "handler":
    n = int(sys.argv[2])
    handler_cycles(n, sys.argv[3])
else:
    sys.exit("unknown mode " + mode)
print("%.9f" % ((time.process_time() - start) / n))
