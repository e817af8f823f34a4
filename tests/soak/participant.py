# tests/soak/participant.py — the contention soak's participant, using
# certbot's own lock (Debian's python3-certbot): same protocol as
# participant.lua, so certbot and luaguard processes contend for one counter.
#   /usr/bin/python3 participant.py DIR ID CYCLES
# certbot's lock_dir does not wait: a held lock raises LockError, so retry.
import os
import random
import sys
import time

from certbot import errors
from certbot._internal import lock

directory, ident, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])


def read_state():
    total, counts = 0, {}
    try:
        with open(os.path.join(directory, "counter")) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return total, counts
    total = int(lines[0])
    for line in lines[1:]:
        if line:
            name, count = line.split(" ")
            counts[name] = int(count)
    return total, counts


def write_state(total, counts):
    tmp = os.path.join(directory, "counter." + ident)
    with open(tmp, "w") as f:
        f.write("%d\n" % total)
        for name, count in counts.items():
            f.write("%s %d\n" % (name, count))
    os.rename(tmp, os.path.join(directory, "counter"))


def say(what):
    os.write(1, ("%s %s %d\n" % (what, ident, os.getpid())).encode())


mine = None
while True:
    while True:
        try:
            held = lock.lock_dir(directory)
            break
        except errors.LockError:
            time.sleep(0.0005)
    say("H")
    total, counts = read_state()
    recorded = counts.get(ident, 0)
    if mine is None:
        mine = recorded
    if recorded != mine:
        sys.stderr.write("participant %s: lost update: completed %d increments, "
                         "the file records %d\n" % (ident, mine, recorded))
        sys.exit(3)
    if mine >= cycles:
        say("R")
        held.release()
        break
    counts[ident] = mine + 1
    write_state(total + 1, counts)
    mine += 1
    say("R")
    held.release()
    time.sleep(random.random() * 0.0005)  # a little work outside the lock
