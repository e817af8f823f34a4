# tests/etcd_post.py ENDPOINT — POSTs to etcd's JSON gateway over one
# kept-alive HTTP/1.1 connection, for a test script that makes many (a curl
# process per request cost ~40 ms of CPU each). Reads "PATH JSON" lines on
# stdin, writes each reply on one line ("ERROR ..." when the request failed).
# Ends at end of input: when the script that started it goes, so does it.
import http.client
import sys
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])


def connect():
    return http.client.HTTPConnection(url.hostname, url.port, timeout=5)


conn = connect()
for line in sys.stdin:
    path, _, body = line.rstrip("\n").partition(" ")
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        reply = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        conn = connect()
        reply = "ERROR %s" % e
    sys.stdout.write(reply.replace("\n", " ") + "\n")
    sys.stdout.flush()
