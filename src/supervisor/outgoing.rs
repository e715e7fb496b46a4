//! Writing queued bytes into a worker's non-blocking stdin: whole lines go
//! into a per-worker queue and leave it only as the pipe takes them, so a
//! full pipe cuts no line and loses none. It must never block.

use std::io::Write;

/// Writes the front of `queue` into `out` until it is empty or `out` would
/// block; what was written leaves the queue, so a line cut by a full pipe
/// is finished later, never dropped half-way or sent twice.
pub fn drain_into(out: &mut impl Write, queue: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !queue.is_empty() {
        match out.write(queue) {
            Ok(0) => break,
            Ok(n) => {
                queue.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::ParentMsg;

    /// A pipe that takes `room` bytes, then would block until `room` grows.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_pipe_gets_the_rest_of_the_line_later() {
        let line = ParentMsg::Notify {
            chat_id: 7,
            text: "x".repeat(100),
        }
        .encode();
        let mut queue = line.clone().into_bytes();
        queue.extend_from_slice(line.as_bytes());
        let mut pipe = Pipe {
            got: Vec::new(),
            room: 30,
        };
        drain_into(&mut pipe, &mut queue).expect("would-block is not an error");
        assert_eq!(pipe.got.len(), 30);
        assert_eq!(queue.len(), 2 * line.len() - 30, "the rest is kept");
        pipe.room = usize::MAX;
        drain_into(&mut pipe, &mut queue).expect("written");
        assert!(queue.is_empty());
        assert_eq!(pipe.got, [line.as_bytes(), line.as_bytes()].concat());
        let text = String::from_utf8(pipe.got).expect("utf-8");
        for l in text.lines() {
            assert!(ParentMsg::decode(l).is_ok(), "whole lines: {l}");
        }
    }
}
