#!/usr/bin/python3
"""A scriptable XMPP client (slixmpp) for the interop tests.

usage: xmpp_client.py JID PASSWORD HOST PORT

Connects to HOST:PORT (no DNS lookups at all), prints one JSON object per line on stdout for
everything it receives ({"event": "ready"} once signed in), and takes one JSON command per line
on stdin:
  {"cmd": "message", "to": JID, "body": TEXT, "id": ID}
  {"cmd": "typing", "to": JID, "state": "composing"|"paused"|"active"}
  {"cmd": "subscribe"|"subscribed"|"unsubscribe"|"unsubscribed", "to": JID}
  {"cmd": "presence", "show": ""|"away"|"dnd"|"xa", "status": TEXT}
  {"cmd": "disco", "to": JID}      -> {"event": "disco", "features": [...]} or {"event": "iq_error", ...}
  {"cmd": "ping", "to": JID}       -> {"event": "pong"} or {"event": "iq_error", ...}
  {"cmd": "iq_unknown", "to": JID} -> an IQ get with a namespace nobody serves
  {"cmd": "quit"}
"""
import asyncio
import json
import logging
import ssl
import sys

import slixmpp

jid, password, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def condition_of(error):
    """The defined condition of a stanza error, read from the XML: slixmpp's own `condition` only
    knows RFC 3920's list, so RFC 6120's `policy-violation` would come out empty."""
    for child in error.xml:
        namespace, _, name = child.tag.partition("}")
        if namespace == "{urn:ietf:params:xml:ns:xmpp-stanzas" and name != "text":
            return name
    return ""


def emit(**fields):
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    print(json.dumps(fields), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.use_aiodns = False
        self.use_ipv6 = False
        self.roster.auto_authorize = None  # None: answer requests by command (False would refuse them)
        self.roster.auto_subscribe = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0085")
        self.register_plugin("xep_0199")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", lambda *_: (emit(event="auth_failed"), self.disconnect()))
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message_error)
        # slixmpp's "message" event needs a body; chat states alone come as "chatstate".
        self.add_event_handler("chatstate", self.on_chatstate)
        self.add_event_handler("presence", self.on_presence)

    async def start(self, _):
        await self.get_roster()
        self.send_presence()
        emit(event="ready")
        asyncio.ensure_future(self.commands())

    def on_message(self, msg):
        if msg["type"] == "error":
            return
        emit(event="message", from_=msg["from"].bare, body=msg["body"], type=msg["type"], state=msg["chat_state"])

    def on_chatstate(self, msg):
        if not msg["body"]:
            emit(event="chatstate", from_=msg["from"].bare, state=msg["chat_state"])

    def on_message_error(self, msg):
        emit(event="message_error", from_=msg["from"].bare, id=msg["id"],
             condition=condition_of(msg["error"]), text=msg["error"]["text"])

    def on_presence(self, pres):
        # slixmpp reports an available presence's <show> as its type.
        kind = pres["type"]
        if kind in ("away", "chat", "dnd", "xa"):
            kind = "available"
        emit(event="presence", from_=pres["from"].bare, type=kind, show=pres["show"], status=pres["status"])

    async def commands(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            c = json.loads(line)
            cmd = c["cmd"]
            if cmd == "message":
                m = self.make_message(mto=c["to"], mbody=c["body"], mtype="chat")
                if c.get("id"):
                    m["id"] = c["id"]
                m["chat_state"] = "active"
                m.send()
            elif cmd == "typing":
                m = self.make_message(mto=c["to"], mtype="chat")
                m["chat_state"] = c["state"]
                m.send()
            elif cmd in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
                self.send_presence(pto=c["to"], ptype=cmd)
            elif cmd == "presence":
                self.send_presence(pshow=c.get("show") or None, pstatus=c.get("status") or None)
            elif cmd in ("disco", "ping", "iq_unknown", "block", "unblock"):
                asyncio.ensure_future(self.query(cmd, c["to"]))
            elif cmd == "quit":
                break
            emit(event="done", cmd=cmd)
        self.disconnect()


async def _query(self, cmd, to):
    try:
        if cmd == "disco":
            info = await self["xep_0030"].get_info(jid=to, timeout=10)
            emit(event="disco", from_=to, features=sorted(info["disco_info"]["features"]))
        elif cmd == "ping":
            await self["xep_0199"].send_ping(to, timeout=10)
            emit(event="pong", from_=to)
        elif cmd in ("block", "unblock"):
            # XEP-0191 on the user's own server. The plugin is loaded only here: loaded at start,
            # slixmpp's session ended during the disco#info and ping exchange of xmpp_prosody.
            if "xep_0191" not in self.plugin:
                self.register_plugin("xep_0191")
            await getattr(self["xep_0191"], cmd)([to], timeout=10)
            emit(event=cmd + "ed", jid=to)
        else:
            iq = self.make_iq_get(queryxmlns="urn:example:nobody-serves-this", ito=to)
            await iq.send(timeout=10)
            emit(event="iq_result", from_=to)
    except slixmpp.exceptions.IqError as e:
        emit(event="iq_error", from_=to, cmd=cmd, condition=e.iq["error"]["condition"])
    except slixmpp.exceptions.IqTimeout:
        emit(event="iq_timeout", from_=to, cmd=cmd)


Client.query = _query
client = Client()
client.connect(address=(host, port))
client.loop.run_until_complete(client.disconnected)
