//! Placeholder: systemd's sd_notify protocol (NOTIFY_SOCKET) is filled in
//! by its own change. The supervisor already calls this interface.

/// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=...`); a no-op
/// when NOTIFY_SOCKET is not set.
pub fn notify(_state: &str) {}
