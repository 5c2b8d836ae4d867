//! The SMTP log handler's sender: one mail per log line, over plain SMTP to a relay (as the
//! manager's `SMTPHandler` sends them), from a thread of its own so that logging never waits on
//! the network. Lines wait in a bounded queue; when it is full, lines are dropped (a mail relay
//! that hangs must not hold the process's memory).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

/// Where and how mails are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// `host:port` of the relay.
    pub relay: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
}

/// Lines waiting to be mailed, at most.
const QUEUE: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends mails for one handler; dropping it ends its thread once the queue is empty.
pub struct Sender {
    queue: SyncSender<String>,
}

impl Sender {
    pub fn start(mail: Mail) -> Sender {
        let (queue, lines) = sync_channel::<String>(QUEUE);
        std::thread::spawn(move || {
            for line in lines {
                // A relay that refuses or fails loses this line only; the next one tries again.
                let _ = send(&mail, &line);
            }
        });
        Sender { queue }
    }

    /// Queues a line; `false` when it was dropped (queue full).
    pub fn offer(&self, line: &str) -> bool {
        match self.queue.try_send(line.to_string()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// A mail's text: headers, then the line, with every line ending CRLF and a leading `.`
/// doubled (SMTP's transparency rule), so a log line can never end the mail early or add a
/// header.
pub fn message(mail: &Mail, line: &str) -> String {
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let mut out = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\n\r\n",
        clean(&mail.from),
        clean(&mail.to.join(", ")),
        clean(&mail.subject)
    );
    for l in line.lines() {
        if l.starts_with('.') {
            out.push('.');
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out
}

fn expect(reader: &mut BufReader<TcpStream>, code: &str) -> std::io::Result<()> {
    // Multi-line replies: `250-…` continues, `250 …` ends.
    loop {
        let mut reply = String::new();
        if reader.read_line(&mut reply)? == 0 {
            return Err(std::io::Error::other("the relay closed the connection"));
        }
        if !reply.starts_with(code) {
            return Err(std::io::Error::other(format!(
                "the relay answered {:?}",
                reply.trim_end()
            )));
        }
        if reply.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

fn send(mail: &Mail, line: &str) -> std::io::Result<()> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(mail.relay.as_str())?
        .next()
        .ok_or_else(|| std::io::Error::other("the relay has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    expect(&mut reader, "220")?;
    let mut say = |command: String, code: &str| -> std::io::Result<()> {
        writer.write_all(command.as_bytes())?;
        expect(&mut reader, code)
    };
    say("HELO portico\r\n".into(), "250")?;
    say(format!("MAIL FROM:<{}>\r\n", mail.from), "250")?;
    for to in &mail.to {
        say(format!("RCPT TO:<{to}>\r\n"), "250")?;
    }
    say("DATA\r\n".into(), "354")?;
    say(format!("{}.\r\n", message(mail, line)), "250")?;
    say("QUIT\r\n".into(), "221")
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn mail(relay: String) -> Mail {
        Mail {
            relay,
            from: "portico@example.org".into(),
            to: vec!["ops@example.org".into()],
            subject: "Portico log".into(),
        }
    }

    #[test]
    fn a_line_cannot_end_the_mail_or_add_headers() {
        let m = mail("x:25".into());
        let text = message(&m, ".\r\nRCPT TO:<evil@example.org>\n.hidden");
        assert!(text.starts_with(
            "From: portico@example.org\r\nTo: ops@example.org\r\nSubject: Portico log\r\n\r\n"
        ));
        assert!(!text.contains("\r\n.\r\n"), "{text:?}");
        assert!(text.contains("\r\n..\r\n"), "{text:?}");
        assert!(text.contains("\r\n..hidden\r\n"), "{text:?}");
        let sneaky = Mail {
            subject: "a\r\nBcc: evil@example.org".into(),
            ..m
        };
        assert!(!message(&sneaky, "x").contains("\r\nBcc:"));
    }

    #[test]
    fn a_mail_is_sent_to_the_relay() {
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = relay.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = relay.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer.write_all(b"220 relay\r\n").unwrap();
            let mut seen = String::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push_str(&line);
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        writer.write_all(b"250 queued\r\n").unwrap();
                    }
                    continue;
                }
                let reply: &[u8] = if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go on\r\n"
                } else if line.starts_with("QUIT") {
                    writer.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else if line.starts_with("HELO") {
                    b"250-relay\r\n250 ok\r\n"
                } else {
                    b"250 ok\r\n"
                };
                writer.write_all(reply).unwrap();
            }
            seen
        });
        let sender = Sender::start(mail(addr));
        assert!(sender.offer("ERROR the disk is full"));
        let seen = server.join().unwrap();
        assert!(seen.contains("MAIL FROM:<portico@example.org>"), "{seen}");
        assert!(seen.contains("RCPT TO:<ops@example.org>"), "{seen}");
        assert!(seen.contains("Subject: Portico log"), "{seen}");
        assert!(seen.contains("ERROR the disk is full"), "{seen}");
    }
}
