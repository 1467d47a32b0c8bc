//! Parse-and-extract timing over the wire fixtures (run with `--release`):
//! `cargo run -p entente-sip --release --example parse_timing`.
//! Prints, per fixture, the mean time to parse a datagram into our types and extract what the
//! endpoint reads (Via list, From/To addresses, CSeq, and the PIDF document of a NOTIFY).

use std::hint::black_box;
use std::time::Instant;

use entente_sip::headers::{cseq, name_addr, uri_to_address, vias};
use entente_sip::{pidf, SipParser, SipxParser};

const FIXTURES: &[(&str, &[u8])] = &[
    (
        "sipp MESSAGE",
        include_bytes!("../testdata/sipp_message_udp.sip"),
    ),
    (
        "sipp SUBSCRIBE",
        include_bytes!("../testdata/sipp_subscribe_udp.sip"),
    ),
    (
        "baresip MESSAGE",
        include_bytes!("../testdata/baresip_message_udp.sip"),
    ),
    (
        "baresip SUBSCRIBE",
        include_bytes!("../testdata/baresip_subscribe_udp.sip"),
    ),
    (
        "NOTIFY + PIDF",
        include_bytes!("../testdata/listener_notify_pidf_udp.sip"),
    ),
    (
        "compact/IPv6/no length",
        include_bytes!("../testdata/compact_comma_via_ipv6_udp_no_length.sip"),
    ),
    (
        "PUBLISH + RPID",
        include_bytes!("../testdata/publish_pidf_busy_udp.sip"),
    ),
];

fn main() {
    let parser = SipxParser::default();
    let rounds = 20_000u32;
    for (name, data) in FIXTURES {
        let start = Instant::now();
        for _ in 0..rounds {
            let m = parser
                .parse_datagram(black_box(data))
                .expect("fixture parses");
            let v = vias(&m).expect("Via");
            let from = uri_to_address(&name_addr(&m, "From").expect("From").uri).ok();
            let to = name_addr(&m, "To").expect("To");
            let c = cseq(&m).expect("CSeq");
            let doc = if m.body().starts_with(b"<?xml") {
                pidf::parse(m.body(), &Default::default()).ok()
            } else {
                None
            };
            black_box((v, from, to, c, doc));
        }
        let per = start.elapsed() / rounds;
        println!(
            "{name:<24} {:>5} bytes  {:>8.2} µs",
            data.len(),
            per.as_secs_f64() * 1e6
        );
    }
}
