//! The SIP/SIMPLE federation edge: listeners, outbound links and the translation between the
//! protocol crate's machines and the router.

use crate::anyhow_lite::Result;
use crate::config::Listen;
use crate::{AppState, Tasks};

/// Starts the edge's listeners (sip, sips) and registers it as the owner of its partners' domains.
pub async fn start(state: &AppState, listeners: &Listen, tasks: &mut Tasks) -> Result<()> {
    let _ = (state, tasks);
    for (name, addr) in [("sip", listeners.sip), ("sips", listeners.sips)] {
        if let Some(addr) = addr {
            tracing::warn!(listener = name, %addr, "this build does not serve this protocol yet; listener not started");
        }
    }
    Ok(())
}
