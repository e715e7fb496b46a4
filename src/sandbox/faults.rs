//! The injected faults as a client sees them: error statuses, an HTML
//! 502, a body that is not JSON, a dropped or hung connection, a huge or
//! endless body. It only ends requests; choosing which fault fires is
//! `state::State::take_fault`.

use super::state::{self, Fault, FaultKind};
use super::{api_429, api_err, send, server, Reply, Shared};
use std::time::Duration;

/// Ends the request the way a fault says.
pub(super) fn apply_fault(shared: &Shared, request: server::Request, fault: &Fault) {
    let reply = match fault.kind {
        FaultKind::Internal500 => api_err(500, "Internal Server Error"),
        FaultKind::BadGateway502 => Reply {
            status: 502,
            content_type: "text/html",
            body: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n".to_vec(),
            retry_after: None,
        },
        FaultKind::TooMany429 => api_429(fault.retry_after),
        FaultKind::Conflict409 => api_err(409, state::CONFLICT_OTHER_POLL),
        FaultKind::Unauthorized401 => api_err(401, "Unauthorized"),
        FaultKind::Malformed => Reply {
            status: 200,
            content_type: "application/json",
            body: br#"{"ok":true,"result":["#.to_vec(),
            retry_after: None,
        },
        FaultKind::NoCode => Reply {
            status: 500,
            content_type: "application/json",
            body: br#"{"ok":false,"description":"Internal error"}"#.to_vec(),
            retry_after: None,
        },
        FaultKind::Huge => {
            let mut body = br#"{"ok":true,"result":[],"padding":""#.to_vec();
            body.resize(body.len() + 20 * 1024 * 1024, b'x');
            body.extend_from_slice(br#""}"#);
            Reply {
                status: 200,
                content_type: "application/json",
                body,
                retry_after: None,
            }
        }
        FaultKind::Html => Reply {
            status: 200,
            content_type: "text/html",
            body: b"<!DOCTYPE html><html><body><h1>Please log in to the Wi-Fi</h1></body></html>".to_vec(),
            retry_after: None,
        },
        FaultKind::Endless => {
            // A chunked 200 whose body goes on until the client gives up (or
            // the sandbox stops): the client must cap what it reads.
            let endless = Endless { sent: 0 };
            let response = server::Response::new(
                server::StatusCode(200),
                vec![],
                endless,
                None,
                None,
            );
            if request.respond(response).is_err() {
                // The client hung up, which is what it should do.
            }
            return;
        }
        FaultKind::Drop => return close_without_reply(shared, request),
        FaultKind::Hang => {
            shared.sleep(Duration::from_millis(fault.hang_ms));
            return close_without_reply(shared, request);
        }
    };
    send(request, reply);
}

/// The body of the `endless` fault: `[` then spaces, with no end in sight
/// (it stops after 1 GiB, far past any cap a client should have).
struct Endless {
    sent: u64,
}

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= 1 << 30 || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(64 * 1024);
        buf[..n].fill(b' ');
        if self.sent == 0 {
            buf[0] = b'[';
        }
        self.sent += n as u64;
        Ok(n)
    }
}

/// Closes the request's connection without writing a byte.
pub(super) fn close_without_reply(_shared: &Shared, request: server::Request) {
    request.close();
}
