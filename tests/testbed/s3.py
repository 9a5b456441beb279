#!/usr/bin/env python3
"""Minimal S3 client for the testbed's artifact store (store.sh); standard library only.

AWS Signature Version 4, header-signed requests and presigned GET URLs, written from the
published algorithm. Used by store.sh (bucket creation, readiness) and by hand:

  s3.py [--endpoint URL] [--bucket B] [--access-key K] [--secret-key S] [--region R] CMD

Defaults come from STORE_ENDPOINT, STORE_BUCKET, STORE_ACCESS_KEY, STORE_SECRET,
STORE_REGION. Commands:
  ping                    signed HEAD of the bucket; exit 0 when it answers 200
  mkbucket                signed PUT of the bucket (200, or 409 when it exists)
  put KEY FILE [K=V...]   signed PUT of FILE as KEY, K=V as x-amz-meta-K headers
  presign KEY [SECONDS]   print a presigned GET URL (default 300 s)
  check                   the conformance checks the e2e tier relies on (see check())
"""

import argparse
import datetime
import hashlib
import hmac
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

UNRESERVED = "-_.~"


def _quote(s, safe=""):
    return urllib.parse.quote(s, safe=UNRESERVED + safe)


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class S3:
    def __init__(self, endpoint, bucket, access_key, secret_key, region):
        self.endpoint = endpoint.rstrip("/")
        u = urllib.parse.urlsplit(self.endpoint)
        self.host = u.netloc
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region

    def _path(self, key=None):
        # Path-style addressing: /bucket/key; every segment percent-encoded, '/' kept.
        p = "/" + _quote(self.bucket)
        if key is not None:
            p += "/" + _quote(key, safe="/")
        return p

    def _sign(self, method, path, query, headers, payload_hash, now):
        """Returns (signature, scope, signed_headers) for a canonical request."""
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        scope = f"{day}/{self.region}/s3/aws4_request"
        canon_q = "&".join(
            f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items())
        )
        lower = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        names = sorted(lower)
        canon_h = "".join(f"{n}:{lower[n]}\n" for n in names)
        signed = ";".join(names)
        creq = "\n".join([method, path, canon_q, canon_h, signed, payload_hash])
        sts = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
        )
        k = _hmac(("AWS4" + self.secret_key).encode(), day)
        k = _hmac(k, self.region)
        k = _hmac(k, "s3")
        k = _hmac(k, "aws4_request")
        return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest(), scope, signed

    def request(self, method, key=None, query=None, body=b"", headers=None, bucket_level=False):
        """Header-signed request. Returns (status, headers, body)."""
        query = dict(query or {})
        now = datetime.datetime.now(datetime.timezone.utc)
        payload_hash = hashlib.sha256(body).hexdigest()
        h = {
            "host": self.host,
            "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": payload_hash,
        }
        h.update(headers or {})
        path = self._path(None if bucket_level else key)
        sig, scope, signed = self._sign(method, path, query, h, payload_hash, now)
        h["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={sig}"
        )
        del h["host"]  # urllib sets it from the URL (same value)
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        return _send(urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                            method=method, headers=h))

    def presign(self, key, expires=300, now=None):
        now = now or datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        q = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self.access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        path = self._path(key)
        sig, _, _ = self._sign("GET", path, q, {"host": self.host}, "UNSIGNED-PAYLOAD", now)
        q["X-Amz-Signature"] = sig
        return self.endpoint + path + "?" + "&".join(
            f"{_quote(k)}={_quote(v)}" for k, v in sorted(q.items())
        )


TIMEOUT = 30


def _send(req, timeout=None):
    timeout = timeout or TIMEOUT
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(url):
    return _send(urllib.request.Request(url))


def check(s3):
    """(a) signed PUT + presigned GET; (b) tampered signature -> 403; (c) expired -> 403;
    (d) multipart upload; (e) HEAD returns x-amz-meta-*. Prints one line per check."""
    failures = []

    def expect(name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}".rstrip())
        if not ok:
            failures.append(name)

    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    st, _, b = s3.request("PUT", "check/a.bin", body=data, headers={"x-amz-meta-sha256": sha})
    expect("a: signed PUT", st == 200, f"status {st} {b[:200]!r}")
    url = s3.presign("check/a.bin", 60)
    st, _, b = get(url)
    expect("a: presigned GET", st == 200 and hashlib.sha256(b).hexdigest() == sha, f"status {st}")
    st, _, _ = s3.request("PUT", "check/other.bin", body=b"x")  # for the key-swap check below
    # Unsigned and wrongly signed header requests must be refused too.
    st, _, b = _send(urllib.request.Request(s3.endpoint + s3._path("check/a.bin")))
    expect("a: unsigned GET refused", st == 403, f"status {st}")
    wrong = S3(s3.endpoint, s3.bucket, s3.access_key, s3.secret_key + "x", s3.region)
    st, _, b = wrong.request("PUT", "check/wrong.bin", body=b"x")
    expect("a: PUT with a wrong secret refused", st == 403, f"status {st}")

    sig = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    st, _, b = get(url.replace(sig, bad))
    expect("b: altered signature", st == 403, f"status {st} {b[:160]!r}")
    other = s3.presign("check/a.bin", 60).replace("check/a.bin", "check/other.bin")
    st, _, _ = get(other)
    expect("b: presigned URL reused for another key", st == 403, f"status {st}")
    st, _, _ = get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=61"))
    expect("b: X-Amz-Expires altered", st == 403, f"status {st}")

    url = s3.presign("check/a.bin", 1)
    time.sleep(2.1)
    st, _, b = get(url)
    expect("c: expired (X-Amz-Expires=1, 2 s later)", st == 403, f"status {st} {b[:160]!r}")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    st, _, _ = get(s3.presign("check/a.bin", 3600, now=past))
    expect("c: signed 2 h ago, valid 1 h", st == 403, f"status {st}")

    key = "check/multi.bin"
    st, _, b = s3.request("POST", key, query={"uploads": ""},
                          headers={"x-amz-meta-sha256": "multi"})
    m = re.search(rb"<UploadId>([^<]+)</UploadId>", b)
    expect("d: create multipart upload", st == 200 and m is not None, f"status {st}")
    if m:
        uid = m.group(1).decode()
        parts = [os.urandom(5 * 1024 * 1024), os.urandom(1234)]
        etags = []
        for n, p in enumerate(parts, 1):
            st, h, b = s3.request("PUT", key, query={"partNumber": str(n), "uploadId": uid}, body=p)
            etags.append({k.lower(): v for k, v in h.items()}.get("etag", ""))
            expect(f"d: upload part {n}", st == 200, f"status {st} {b[:160]!r}")
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags, 1)) + "</CompleteMultipartUpload>"
        st, _, b = s3.request("POST", key, query={"uploadId": uid}, body=xml.encode())
        expect("d: complete multipart upload", st == 200 and b"Error" not in b, f"status {st} {b[:200]!r}")
        st, _, b = get(s3.presign(key, 60))
        whole = b"".join(parts)
        expect("d: presigned GET of the multipart object", st == 200 and b == whole,
               f"status {st} len {len(b)}/{len(whole)}")

    st, h, _ = s3.request("HEAD", "check/a.bin")
    h = {k.lower(): v for k, v in h.items()}
    expect("e: HEAD x-amz-meta-sha256", st == 200 and h.get("x-amz-meta-sha256") == sha,
           f"status {st} meta {h.get('x-amz-meta-sha256')!r} length {h.get('content-length')}")
    st, _, _ = s3.request("HEAD", "check/missing.bin")
    expect("e: HEAD of a missing key", st == 404, f"status {st}")
    return 1 if failures else 0


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=env("STORE_ENDPOINT", "http://127.0.0.1:9000"))
    ap.add_argument("--bucket", default=env("STORE_BUCKET", "shipit-test"))
    ap.add_argument("--access-key", default=env("STORE_ACCESS_KEY", "shipit-test-key"))
    ap.add_argument("--secret-key", default=env("STORE_SECRET", "shipit-test-secret"))
    ap.add_argument("--region", default=env("STORE_REGION", "us-east-1"))
    ap.add_argument("--timeout", type=float, default=30, help="seconds per HTTP request")
    ap.add_argument("cmd")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    global TIMEOUT
    TIMEOUT = a.timeout
    s3 = S3(a.endpoint, a.bucket, a.access_key, a.secret_key, a.region)
    if a.cmd == "ping":
        st, _, _ = s3.request("HEAD", bucket_level=True)
        return 0 if st == 200 else 1
    if a.cmd == "mkbucket":
        st, _, b = s3.request("PUT", bucket_level=True)
        if st in (200, 409):
            return 0
        print(f"mkbucket: status {st} {b[:300]!r}", file=sys.stderr)
        return 1
    if a.cmd == "put" and len(a.args) >= 2:
        with open(a.args[1], "rb") as f:
            body = f.read()
        meta = {"x-amz-meta-" + kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in a.args[2:]}
        st, _, b = s3.request("PUT", a.args[0], body=body, headers=meta)
        if st != 200:
            print(f"put: status {st} {b[:300]!r}", file=sys.stderr)
        return 0 if st == 200 else 1
    if a.cmd == "presign" and len(a.args) in (1, 2):
        print(s3.presign(a.args[0], int(a.args[1]) if len(a.args) == 2 else 300))
        return 0
    if a.cmd == "check":
        return check(s3)
    ap.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:  # connection refused, timeout...: short, for retry loops
        print(f"s3.py: {e}", file=sys.stderr)
        sys.exit(1)
