//! Throughput of content inspection and of the outbreak detector.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use entente_policy::{Fingerprint, Inspector, Outbreak, OutbreakSettings};
use std::time::{Duration, Instant};

fn rules() -> String {
    let mut text = String::from(
        "reject executable\nreject lookalike paypal.com\nreject lookalike example-bank.com\n\
         reject card\nreject eicar\nquarantine regex ssn \\b\\d{3}-\\d{2}-\\d{4}\\b\n",
    );
    for i in 0..1000 {
        text.push_str(&format!("reject domain bad{i}.example\n"));
        text.push_str(&format!("tag keyword secret{i}\n"));
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = rules();
    c.bench_function("compile 2006 rules", |b| {
        b.iter(|| Inspector::from_rules(black_box(&text)).unwrap())
    });
    let ins = Inspector::from_rules(&text).unwrap();
    let plain = "hey, are we still on for lunch tomorrow at noon? the usual place near the office";
    let linked =
        "is it you? http://x.example/pic.jpg and see www.paypal.com/help and bad5.example.org";
    let long: String = "the quarterly numbers look fine to me, ship it. ".repeat(300);
    c.bench_function("inspect short text", |b| {
        b.iter(|| ins.inspect_text(black_box(plain)))
    });
    c.bench_function("inspect three links", |b| {
        b.iter(|| ins.inspect_text(black_box(linked)))
    });
    c.bench_function("inspect 14 KB text", |b| {
        b.iter(|| ins.inspect_text(black_box(&long)))
    });
    // Hostile shapes: the most links allowed, each with a long many-label host; and a body that
    // is one long run of dots for the link finder.
    let host: String = (0..60).map(|i| format!("p{i}.")).collect::<String>() + "com";
    let many_links: String = (0..32).map(|i| format!("http://{i}{host}/x ")).collect();
    c.bench_function("inspect 32 links of 61 labels", |b| {
        b.iter(|| ins.inspect_text(black_box(&many_links)))
    });
    c.bench_function("extract 32 links of 61 labels", |b| {
        b.iter(|| entente_policy::inspect::extract_links(black_box(&many_links), 33))
    });
    let dots = "a.".repeat(30_000);
    c.bench_function("inspect 60 KB of a.a.a.", |b| {
        b.iter(|| ins.inspect_text(black_box(&dots)))
    });
    let digits = "4111 ".repeat(12_000);
    c.bench_function("inspect 60 KB of digit groups", |b| {
        b.iter(|| ins.inspect_text(black_box(&digits)))
    });
    c.bench_function("fingerprints of a linked message", |b| {
        b.iter(|| Fingerprint::of_message(black_box(linked), 32))
    });
    let mut ob = Outbreak::new(OutbreakSettings {
        recipients: 10,
        window: Duration::from_secs(60),
        max_tracked: 100_000,
        ..OutbreakSettings::default()
    });
    let t0 = Instant::now();
    let fps: Vec<Fingerprint> = (0..1000)
        .map(|i| Fingerprint::of_body(&format!("m{i}")))
        .collect();
    let mut i = 0usize;
    c.bench_function("outbreak observe", |b| {
        b.iter(|| {
            i += 1;
            let fp = fps[i % fps.len()];
            ob.observe(&format!("s{}", i % 5000), "r@hub", fp, t0)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
