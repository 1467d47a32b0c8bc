//! A throwaway blocking driver for trying the endpoint against real SIP tools on loopback
//! (sipp, baresip): UDP and TCP on 127.0.0.1:<port>, events printed, nothing routed.
//! `cargo run -p entente-sip --example loopback_gateway -- 5060 20` (port, seconds); with
//! `APPROVE=1` every watcher is approved and sees the watched user as busy.
//! IP-literal destinations only; the real driver with DNS and TLS lives in the server crate.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use entente_model::{
    Address, Event, Message, Presence, PresenceKind, Show, Subscription, SubscriptionKind,
};
use entente_sip::{Config, ConnectionId, Destination, Endpoint, Transport};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5060);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let approve = std::env::var_os("APPROVE").is_some();
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    let udp = UdpSocket::bind(bind)?;
    udp.set_nonblocking(true)?;
    let tcp = TcpListener::bind(bind)?;
    tcp.set_nonblocking(true)?;
    let config = Config {
        local_host: "127.0.0.1".into(),
        local_port: Some(port),
        local_domains: vec!["hub.test".into()],
        message_answer_delay: Duration::ZERO,
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, Instant::now(), time::OffsetDateTime::now_utc());
    let mut conns: HashMap<u64, TcpStream> = HashMap::new();
    let mut next_conn = 0u64;
    // With CALL=<ip> set, bob@hub.test also messages carol@<ip> and watches her presence
    // (e.g. the interop listener, which answers SUBSCRIBE with a PIDF NOTIFY).
    if let Ok(ip) = std::env::var("CALL") {
        let bob = Address::parse("bob@hub.test").map_err(std::io::Error::other)?;
        let carol = Address::parse(&format!("carol@{ip}")).map_err(std::io::Error::other)?;
        let now = Instant::now();
        let hello = Event::Message(Message {
            id: "hello-1".into(),
            from: bob.clone(),
            to: carol.clone(),
            body: "hello carol from entente".into(),
            thread: None,
            ts: time::OffsetDateTime::now_utc(),
        });
        let watch = Event::Subscription(Subscription {
            from: bob,
            to: carol,
            kind: SubscriptionKind::Subscribe,
        });
        for e in [hello, watch] {
            ep.send(e, now).map_err(std::io::Error::other)?;
        }
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 65536];
    println!("listening on udp+tcp {bind}");
    while Instant::now() < end {
        let now = Instant::now();
        loop {
            match udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Err(e) = ep.handle_datagram(from, &buf[..n], now) {
                        println!("UDP {from}: dropped: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while let Ok((stream, from)) = tcp.accept() {
            stream.set_nonblocking(true)?;
            next_conn += 1;
            println!("TCP connection {next_conn} from {from}");
            conns.insert(next_conn, stream);
        }
        let mut closed = Vec::new();
        for (id, stream) in conns.iter_mut() {
            match stream.read(&mut buf) {
                Ok(0) => closed.push(*id),
                Ok(n) => {
                    if let Err(e) =
                        ep.handle_stream_bytes(ConnectionId(*id), Transport::Tcp, &buf[..n], now)
                    {
                        println!("TCP {id}: framing lost: {e}");
                        closed.push(*id);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => closed.push(*id),
            }
        }
        for id in closed {
            conns.remove(&id);
            ep.handle_connection_closed(ConnectionId(id));
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        while let Some(event) = ep.poll_event() {
            println!("EVENT {event:?}");
            // With APPROVE set, stand in for the router: approve every watcher and tell it
            // the watched user is busy.
            if let Event::Subscription(s) = &event {
                if approve && s.kind == SubscriptionKind::Subscribe {
                    let answer = Event::Subscription(Subscription {
                        from: s.to.clone(),
                        to: s.from.clone(),
                        kind: SubscriptionKind::Subscribed,
                    });
                    let presence = Event::Presence(Presence {
                        from: s.to.clone(),
                        to: None,
                        kind: PresenceKind::Available {
                            show: Show::Dnd,
                            status: Some("in a meeting".into()),
                        },
                    });
                    for e in [answer, presence] {
                        if let Err(err) = ep.send(e, now) {
                            println!("send refused: {err}");
                        }
                    }
                }
            }
        }
        while let Some(t) = ep.poll_transmit() {
            let first = String::from_utf8_lossy(&t.payload)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            println!("SEND {:?}: {first}", t.destination);
            let sent = match &t.destination {
                Destination::Datagram(addr) => udp.send_to(&t.payload, addr).map(|_| ()),
                Destination::Connection(id) => match conns.get_mut(&id.0) {
                    Some(s) => s.write_all(&t.payload),
                    None => Err(ErrorKind::NotConnected.into()),
                },
                Destination::Resolve {
                    host,
                    port,
                    transport,
                } => match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => {
                        let addr = SocketAddr::new(ip, port.unwrap_or(5060));
                        match transport {
                            Transport::Udp => udp.send_to(&t.payload, addr).map(|_| ()),
                            _ => TcpStream::connect(addr).and_then(|mut s| {
                                s.write_all(&t.payload)?;
                                s.set_nonblocking(true)?;
                                next_conn += 1;
                                conns.insert(next_conn, s);
                                Ok(())
                            }),
                        }
                    }
                    Err(_) => Err(ErrorKind::AddrNotAvailable.into()),
                },
            };
            if let Err(e) = sent {
                println!("send failed: {e}");
                ep.handle_transport_error(&t, now);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("done");
    Ok(())
}
