"""Deal new connections to `pdp serve --workers N` round-robin, not by the kernel's hash.

Workers share a port with SO_REUSEPORT; by default the kernel picks a worker by a hash of each
connection's addresses and ports, so 4 long-lived client connections land 4:0 on one of two
workers one time in eight, and that worker is saturated while the other idles for as long as
the connections live. Each worker attaches to its listening sockets a tiny BPF program that
picks the worker itself: an atomic counter in a BPF array, modulo N, is the index of the
socket that gets the connection (SO_ATTACH_REUSEPORT_EBPF). The program belongs to the port's
socket group, so the last worker to attach serves them all, and it outlives any one worker; an
index past the sockets present (a worker restarting) falls back to the kernel's hash.

Loading it needs CAP_BPF (or root), or `kernel.unprivileged_bpf_disabled=0`. Without, the
kernel's hash stays and one line says so. grpcio has no way to hand a worker a connection
accepted elsewhere (its C core keeps that API private), hence this; docs/SERVING.md compares
the schemes tried. `cpu` (a classic BPF program, no privilege: the worker of the CPU that
took the SYN) and `hash` are kept for that comparison (bench/spread.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import socket
import struct

log = logging.getLogger("pdp.server")

SCHEMES = ("round-robin", "cpu", "hash")

_SO_ATTACH_REUSEPORT_CBPF = 51
_SO_ATTACH_REUSEPORT_EBPF = 52
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE, _BPF_PROG_LOAD = 0, 5
_BPF_MAP_TYPE_ARRAY, _BPF_PROG_TYPE_SOCKET_FILTER = 2, 1


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def round_robin_program(map_fd: int, workers: int) -> bytes:
    """eBPF: index = atomic_fetch_add(counter, 1) % workers; no counter: past the end."""
    return b"".join(
        [
            _insn(0x62, dst=10, off=-4, imm=0),  # *(u32 *)(fp - 4) = 0: the key
            _insn(0xBF, dst=2, src=10),  # r2 = fp
            _insn(0x07, dst=2, imm=-4),  # r2 -= 4
            _insn(0x18, dst=1, src=1, imm=map_fd),  # r1 = the map (a pseudo map fd) ...
            _insn(0x00),  # ... (the second half of the 64-bit load)
            _insn(0x85, imm=1),  # r0 = bpf_map_lookup_elem(r1, r2)
            _insn(0x15, dst=0, off=5, imm=0),  # if r0 == 0: goto no_counter
            _insn(0xB7, dst=1, imm=1),  # r1 = 1
            _insn(0xC3, dst=0, src=1, imm=0x01),  # r1 = atomic_fetch_add((u32 *)r0, r1)
            _insn(0x94, dst=1, imm=workers),  # w1 %= workers
            _insn(0xBF, dst=0, src=1),  # r0 = r1
            _insn(0x95),  # return r0
            _insn(0xB4, dst=0, imm=-1),  # no_counter: w0 = 0xffffffff (the kernel's hash)
            _insn(0x95),  # return r0
        ]
    )


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(0, f"no bpf syscall number for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def _load_round_robin(workers: int) -> int:
    """The program's fd (the map is held by the program)."""
    attr = ctypes.create_string_buffer(struct.pack("<IIII", _BPF_MAP_TYPE_ARRAY, 4, 4, 1), 128)
    map_fd = _bpf(_BPF_MAP_CREATE, attr)
    try:
        code = round_robin_program(map_fd, workers)
        insns = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(b"Apache-2.0")
        attr = ctypes.create_string_buffer(
            struct.pack(
                "<IIQQ",
                _BPF_PROG_TYPE_SOCKET_FILTER,
                len(code) // 8,
                ctypes.addressof(insns),
                ctypes.addressof(license_),
            ),
            128,
        )
        return _bpf(_BPF_PROG_LOAD, attr)
    finally:
        os.close(map_fd)  # the loaded program keeps its own reference


def _cpu_program() -> bytes:
    """Classic BPF: A = the CPU handling the SYN; return A (a socket index)."""
    ld_cpu = struct.pack("<HBBI", 0x20, 0, 0, (-0x1000 + 36) & 0xFFFFFFFF)  # ld #cpu
    ret_a = struct.pack("<HBBI", 0x16, 0, 0, 0)  # ret a
    return ld_cpu + ret_a


def shared_listeners() -> list[socket.socket]:
    """This process's listening TCP sockets that share their port (SO_REUSEPORT), as
    duplicates the caller closes. grpcio does not expose its listeners' descriptors."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            listening = (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            )
        except OSError:
            listening = False
        if listening:
            found.append(sock)
        else:
            sock.close()
    return found


def deal_connections(workers: int, scheme: str = "round-robin") -> str:
    """Attach `scheme` to this worker's shared listeners; returns what deals connections now
    (one line for the log)."""
    listeners = shared_listeners()
    if scheme == "hash" or not listeners:
        for s in listeners:
            s.close()
        return "connections dealt by the kernel's hash (SO_REUSEPORT)"
    try:
        if scheme == "cpu":
            code = _cpu_program()
            program = ctypes.create_string_buffer(code, len(code))
            fprog = struct.pack("<HxxxxxxQ", len(code) // 8, ctypes.addressof(program))
            for s in listeners:
                s.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
            return "connections dealt by the CPU that takes each SYN (classic BPF)"
        for s in listeners:
            # A program (and counter) per port: one shared by the gRPC and HTTP ports would
            # deal each port's connections by a count that the other port's also advance.
            prog_fd = _load_round_robin(workers)
            try:
                s.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_EBPF, prog_fd)
            finally:
                os.close(prog_fd)
        return f"connections dealt round-robin over the {workers} workers (BPF)"
    except OSError as exc:
        return (
            f"connections dealt by the kernel's hash (SO_REUSEPORT): the round-robin program "
            f"needs CAP_BPF or root ({exc.strerror or exc})"
        )
    finally:
        for s in listeners:
            with contextlib.suppress(OSError):
                s.close()
