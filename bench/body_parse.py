"""CPU of the gateway's body parsing (`request.body_method_override`, the `_method` check) for
hostile bodies at pdp's parse caps: many urlencoded fields, many multipart parts, headers and
lines, JSON of many objects, brackets and integers. Not a test.

Reproduce:  .venv/bin/python bench/body_parse.py [NAME-SUBSTRING ...]

Best of 3 per body, in CPU time of this process (`time.process_time`). docs/GATEWAY.md
("Parse cost") has the figures.
"""

import sys
import time

from pdp.gateway.request import HttpAttributes, body_method_override

try:
    from pdp.gateway.forms import MAX_PARSED_BYTES as P
except ImportError:
    P = 1 << 20
N = 1 << 20
B = "XyZb"


def fill(head: bytes, unit: bytes, tail: bytes, size: int) -> bytes:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


cases = {
    "urlenc a&a&": ("application/x-www-form-urlencoded", fill(b"", b"a&", b"", N)),
    "urlenc %41=&": ("application/x-www-form-urlencoded", fill(b"", b"%41=&", b"", N)),
    "urlenc ;a;a": ("application/x-www-form-urlencoded", fill(b"", b";a", b"", N)),
    "urlenc &_&_": ("application/x-www-form-urlencoded", fill(b"", b"&_", b"", N)),
    "urlenc [method[x]=&": (
        "application/x-www-form-urlencoded",
        fill(b"", b"[method[x]=&", b"", N),
    ),
    "multipart 1000 parts": (
        f"multipart/form-data; boundary={B}",
        b"".join(
            f'--{B}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n{"v" * (P // 1000 - 70)}\r\n'.encode()
            for i in range(999)
        )
        + f"--{B}--\r\n".encode(),
    ),
    "multipart many headers": (
        f"multipart/form-data; boundary={B}",
        b"".join(
            f'--{B}\r\nContent-Disposition: form-data; name="f{i}"\r\n'.encode()
            + b"a:b\r\n" * (P // 5000 - 15)
            + b"\r\nv\r\n"
            for i in range(999)
        )
        + f"--{B}--\r\n".encode(),
    ),
    "multipart short lines": (
        f"multipart/form-data; boundary={B}",
        fill(
            f'--{B}\r\nContent-Disposition: form-data; name="f"\r\n\r\n'.encode(),
            b"\n",
            f"\r\n--{B}--\r\n".encode(),
            P,
        ),
    ),
    "multipart _method part of short lines": (
        f"multipart/form-data; boundary={B}",
        fill(
            f'--{B}\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'.encode(),
            b"\n",
            f"POST\r\n--{B}--\r\n".encode(),
            P,
        ),
    ),
    "json many objects": (
        "application/json",
        fill(b'{"_method":"POST","a":[', b'{"_m":0},', b"0]}", P),
    ),
    "json many []": (
        "application/json",
        fill(b'{"_method":"POST","a":[', b"[[[[],[]],[[],[]]],[[[],[]],[[],[]]]],", b"0]}", P),
    ),
    "json many ints": ("application/json", fill(b'{"_method":"POST","a":[', b"1,", b"0]}", P)),
    # No closing quote, over 512 brackets: the depth check's string scan (quadratic before
    # session 21: ~55 s of CPU at 128 KiB).
    'json unterminated \\"': (
        "application/json",
        fill(b'{"_method":"POST","a":"' + b"[" * 600, b'\\"', b"", P),
    ),
    # Cut (the length says more follows): read key by key to the cut.
    "json cut many keys": (
        "application/json",
        fill(b'{"_method":"POST"', b',"a":1', b',"b":"', P),
        2 * P,
    ),
}
only = sys.argv[1:]
for name, (ct, body, *declared) in cases.items():
    if only and not any(o in name for o in only):
        continue
    length = str(declared[0] if declared else len(body))
    a = HttpAttributes("POST", "/x", {"content-type": ct, "content-length": length}, body=body)
    best = 1e9
    for _ in range(3):
        t = time.process_time()
        r = body_method_override(a, True)
        best = min(best, time.process_time() - t)
    print(f"{name:24s} {len(body):8d} B  {best * 1000:7.1f} ms CPU  -> {r[0] or 'pass'}")
