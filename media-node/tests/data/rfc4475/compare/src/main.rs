//! Runs candidate SIP parsers over the RFC 4475 torture messages and prints, per message, whether
//! each parser accepted it at two levels:
//!   msg   - the crate's message parser returned Ok;
//!   typed - additionally every Via, From, To, CSeq, Call-ID and Contact header turned into the
//!           crate's typed form (what a UA needs before it can act on a request).
//! A valid message must pass `typed`; an invalid one must fail it (else validation must be added).

use std::fmt::Write as _;
use std::path::Path;

fn rsip_check(data: &[u8]) -> (bool, bool, String) {
    use rsip::prelude::*;
    let msg = match rsip::SipMessage::try_from(data) {
        Ok(m) => m,
        Err(e) => return (false, false, format!("{e}")),
    };
    let typed = (|| -> Result<(), rsip::Error> {
        for h in msg.headers().iter() {
            match h {
                rsip::Header::Via(v) => drop(v.typed()?),
                rsip::Header::From(v) => drop(v.typed()?),
                rsip::Header::To(v) => drop(v.typed()?),
                rsip::Header::CSeq(v) => drop(v.typed()?),
                rsip::Header::Contact(v) => drop(v.typed()?),
                _ => {}
            }
        }
        msg.via_header()?;
        msg.from_header()?;
        msg.to_header()?;
        msg.call_id_header()?;
        msg.cseq_header()?;
        Ok(())
    })();
    match typed {
        Ok(()) => (true, true, String::new()),
        Err(e) => (true, false, format!("{e}")),
    }
}

fn rsipstack_check(data: &[u8]) -> (bool, bool, String) {
    use rsipstack::sip::prelude::*;
    use rsipstack::sip::{Header, SipMessage};
    let msg = match SipMessage::try_from(data) {
        Ok(m) => m,
        Err(e) => return (false, false, format!("{e}")),
    };
    let typed = (|| -> Result<(), rsipstack::sip::Error> {
        for h in msg.headers().iter() {
            match h {
                Header::Via(v) => drop(v.typed()?),
                Header::From(v) => drop(v.typed()?),
                Header::To(v) => drop(v.typed()?),
                Header::CSeq(v) => drop(v.typed()?),
                Header::Contact(v) => drop(v.typed()?),
                _ => {}
            }
        }
        msg.via_header()?;
        msg.from_header()?;
        msg.to_header()?;
        msg.call_id_header()?;
        msg.cseq_header()?;
        Ok(())
    })();
    match typed {
        Ok(()) => (true, true, String::new()),
        Err(e) => (true, false, format!("{e}")),
    }
}

fn vaani_check(data: &[u8]) -> (bool, bool, String) {
    match vaani_media::sip::message::SipMessage::parse(data) {
        Ok(_) => (true, true, String::new()),
        Err(e) => (false, false, format!("{e}")),
    }
}

fn verdict(class: &str, accepted: bool) -> &'static str {
    match (class, accepted) {
        ("valid", true) | ("invalid", false) | ("either", _) => "ok",
        _ => "WRONG",
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    let mut table = String::new();
    let mut notes = String::new();
    let _ = writeln!(
        table,
        "| message | RFC 4475 | expected | rsip 0.4.0 msg / typed | rsipstack 0.7.14 msg / typed | vaani sip::message |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    let mut score = [[0u32; 2]; 3];
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut it = line.split_whitespace();
        let (name, section, class) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let data = std::fs::read(dir.join(format!("{name}.dat"))).expect("dat");
        let results = [
            rsip_check(&data),
            rsipstack_check(&data),
            vaani_check(&data),
        ];
        let mut cells = Vec::new();
        for (i, (m, t, err)) in results.iter().enumerate() {
            let v = verdict(class, *t);
            score[i][usize::from(v == "ok")] += 1;
            if i < 2 {
                cells.push(format!(
                    "{} / {} {}",
                    if *m { "accept" } else { "reject" },
                    if *t { "accept" } else { "reject" },
                    if v == "ok" { "" } else { "**✗**" }
                ));
            } else {
                cells.push(format!(
                    "{} {}",
                    if *t { "accept" } else { "reject" },
                    if v == "ok" { "" } else { "**✗**" }
                ));
            }
            if !err.is_empty() {
                let crate_name = ["rsip", "rsipstack", "vaani"][i];
                let e: String = err.chars().take(110).collect();
                let _ = writeln!(notes, "{name} [{crate_name}]: {}", e.replace('\n', " "));
            }
        }
        let _ = writeln!(
            table,
            "| {name} | {section} | {class} | {} | {} | {} |",
            cells[0], cells[1], cells[2]
        );
    }
    println!("{table}");
    for (i, n) in ["rsip", "rsipstack", "vaani"].iter().enumerate() {
        println!(
            "{n}: {} conforming, {} wrong (typed level)",
            score[i][1], score[i][0]
        );
    }
    println!("\nerrors:\n{notes}");
}
