#!/usr/bin/env python3
"""Loopback-only DNS responder (UDP, stdlib) for the tests. Answers:
  A    <name> -> 127.0.0.1 for every name given with --a NAME
  SRV  _xmpp-server._tcp.NAME -> 0 5 PORT NAME. for --srv NAME:PORT
  everything else -> NXDOMAIN (never recurses, never forwards).
usage: mini_dns.py --port 5353 --a corp.test --srv corp.test:5269"""
import argparse, socket, struct, time


def qname(data, off):
    labels = []
    while data[off]:
        n = data[off]; labels.append(data[off + 1:off + 1 + n].decode()); off += n + 1
    return ".".join(labels).lower(), off + 1


def enc(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="127.0.0.1"); p.add_argument("--port", type=int, default=5353)
    p.add_argument("--a", action="append", default=[]); p.add_argument("--srv", action="append", default=[])
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    arec = {n.lower() for n in a.a}
    srv = {f"_xmpp-server._tcp.{n.split(':')[0].lower()}": (n.split(':')[0], int(n.split(':')[1])) for n in a.srv}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((a.addr, a.port)); s.settimeout(0.5)
    end = time.time() + a.timeout
    while time.time() < end:
        try:
            data, peer = s.recvfrom(4096)
        except socket.timeout:
            continue
        tid, flags, qd = struct.unpack(">HHH", data[:6])
        name, off = qname(data, 12); qtype, qclass = struct.unpack(">HH", data[off:off + 4])
        question = data[12:off + 4]
        answers = []
        if qtype == 1 and name in arec:
            answers.append(enc(name) + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1"))
        elif qtype == 33 and name in srv:
            tgt, port = srv[name]; rd = struct.pack(">HHH", 0, 5, port) + enc(tgt)
            answers.append(enc(name) + struct.pack(">HHIH", 33, 1, 60, len(rd)) + rd)
        known = name in arec or name in srv
        rcode = 0 if (answers or known) else 3
        hdr = struct.pack(">HHHHHH", tid, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        s.sendto(hdr + question + b"".join(answers), peer)
        print(f"DNS {peer[0]}:{peer[1]} {name} type={qtype} -> {'NXDOMAIN' if rcode == 3 else len(answers)}", flush=True)


if __name__ == "__main__":
    main()
