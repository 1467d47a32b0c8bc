//! The login machine driven by arbitrary bytes, with the driver answering every request.
#![no_main]

use std::time::Instant;

use entente_oscar::{AccountAnswer, Credential, Login, LoginConfig, LoginOutput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut l = Login::new(LoginConfig::new("hub.example", "127.0.0.2:5190"), now, [0; 32]);
    for chunk in data.chunks(37) {
        l.handle_input(chunk, now);
        while l.poll_transmit().is_some() {}
        while let Some(o) = l.poll_event() {
            if let LoginOutput::Request(_) = o {
                let answer = match chunk.first().copied().unwrap_or(0) % 3 {
                    0 => AccountAnswer::NoSuchAccount,
                    1 => AccountAnswer::Found {
                        display_name: "Alice".into(),
                        credential: Credential::Md5Password([0; 16]),
                    },
                    _ => AccountAnswer::Found {
                        display_name: "Alice".into(),
                        credential: Credential::Verified,
                    },
                };
                l.answer(answer, now);
            }
        }
    }
});
