//! The capture's line reader, fed lines by hand: what is forwarded, what is kept for the reply.

use super::*;
use rustpx_runtime::markers::{BEGIN_CONTENT, CHANGED_TYPE, END_CONTENT, PANIC_NOTIFICATION};

type Seen = Arc<Mutex<Vec<Captured>>>;

fn reader(name: &'static str, may_have_value: bool) -> (StreamReader, Seen, Receiver<Done>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let sink: StreamSink = Arc::new(move |o| sink_seen.lock().unwrap().push(o));
    let (tx, rx) = mpsc::channel();
    let r = StreamReader::new(
        name,
        "\u{1}END".into(),
        Arc::new(Mutex::new(CurrentRun {
            run_id: "run-1".into(),
            may_have_value,
        })),
        sink,
        Box::new(move |done| {
            let _ = tx.send(done);
        }),
    );
    (r, seen, rx)
}

fn feed(r: &mut StreamReader, lines: &[&str]) {
    for line in lines {
        r.line(line, true);
    }
    r.flush();
}

fn stdout_report(done: &Receiver<Done>) -> StdoutReport {
    match done.recv().unwrap() {
        Done::Stdout(report) => report,
        Done::Stderr(_) => panic!("expected the stdout report"),
    }
}

/// What was forwarded, as short strings: `text:...` or `display:mime=content,...`.
fn forwarded(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|c| match c {
            Captured::Stream(s) => format!("text:{}", s.text),
            Captured::Display(d) => {
                assert_eq!(d.run_id, "run-1");
                let parts: Vec<String> = d.data.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("display:{}", parts.join(","))
            }
        })
        .collect()
}

fn block(mime: &str, content: &'static str) -> [String; 3] {
    [
        format!("{BEGIN_CONTENT}{mime}"),
        content.to_owned(),
        END_CONTENT.to_owned(),
    ]
}

fn lines(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

fn feed_owned(r: &mut StreamReader, lines: &[String]) {
    let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
    feed(r, &borrowed);
}

#[test]
fn text_is_forwarded_and_a_trailing_display_is_the_value() {
    let (mut r, seen, done) = reader("stdout", true);
    let begin = format!("{BEGIN_CONTENT}text/plain");
    feed(&mut r, &["hello", &begin, "42", END_CONTENT, "\u{1}END"]);
    assert_eq!(forwarded(&seen), vec!["text:hello\n"]);
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([("text/plain".into(), "42".into())]))
    );
}

#[test]
fn a_display_followed_by_text_is_forwarded_before_that_text() {
    let (mut r, seen, done) = reader("stdout", true);
    let before = ["before".to_owned()];
    let after = ["after".to_owned()];
    feed_owned(
        &mut r,
        &lines(&[&before, &block("text/html", "<b>x</b>"), &after]),
    );
    assert_eq!(
        forwarded(&seen),
        vec![
            "text:before\n",
            "display:text/html=<b>x</b>",
            "text:after\n"
        ]
    );
    r.line("\u{1}END", true);
    assert_eq!(stdout_report(&done).value, None);
}

#[test]
fn without_a_final_expression_each_block_is_a_display_at_once() {
    let (mut r, seen, done) = reader("stdout", false);
    // No line follows the block: it is forwarded anyway, while the run goes on.
    feed_owned(&mut r, &block("image/svg+xml", "<svg/>"));
    assert_eq!(forwarded(&seen), vec!["display:image/svg+xml=<svg/>"]);
    feed_owned(&mut r, &block("image/svg+xml", "<svg id='2'/>"));
    r.line("\u{1}END", true);
    assert_eq!(forwarded(&seen).len(), 2);
    assert_eq!(stdout_report(&done).value, None);
}

#[test]
fn a_repeated_type_ends_the_pending_bundle_and_the_last_one_is_the_value() {
    let (mut r, seen, done) = reader("stdout", true);
    feed_owned(
        &mut r,
        &lines(&[
            &block("text/plain", "chart"),
            &block("image/svg+xml", "<svg id='1'/>"),
            &block("image/svg+xml", "<svg id='2'/>"),
        ]),
    );
    assert_eq!(
        forwarded(&seen),
        vec!["display:image/svg+xml=<svg id='1'/>,text/plain=chart"]
    );
    r.line("\u{1}END", true);
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([(
            "image/svg+xml".into(),
            "<svg id='2'/>".into()
        )]))
    );
}

#[test]
fn a_unit_value_after_a_block_makes_that_block_a_display() {
    let (mut r, seen, done) = reader("stdout", true);
    feed_owned(
        &mut r,
        &lines(&[&block("image/png", "iVBOR"), &block("text/plain", "()")]),
    );
    assert_eq!(forwarded(&seen), vec!["display:image/png=iVBOR"]);
    r.line("\u{1}END", true);
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([("text/plain".into(), "()".into())]))
    );
}

#[test]
fn markers_are_kept_out_of_the_text() {
    let (mut r, seen, done) = reader("stdout", true);
    let changed = format!("{CHANGED_TYPE}x");
    feed(&mut r, &[PANIC_NOTIFICATION, &changed, "partial\u{1}END"]);
    assert_eq!(forwarded(&seen), vec!["text:partial"]);
    let report = stdout_report(&done);
    assert!(report.panicked);
    assert_eq!(report.changed_type, vec!["x".to_string()]);
}

#[test]
fn stderr_notes_the_panic_message() {
    let (mut r, seen, done) = reader("stderr", true);
    feed(
        &mut r,
        &[
            "thread '<unnamed>' panicked at src/lib.rs:3:1:",
            "boom",
            "\u{1}END",
        ],
    );
    assert!(forwarded(&seen)[0].contains("boom"));
    let Done::Stderr(report) = done.recv().unwrap() else {
        panic!()
    };
    assert_eq!(report.panic, Some(("src/lib.rs:3:1".into(), "boom".into())));
}

#[test]
fn lines_split_across_reads_are_joined_and_a_partial_line_waits() {
    let (mut r, seen, done) = reader("stdout", true);
    r.bytes(b"hel");
    r.bytes(b"lo\nwor");
    r.flush();
    assert_eq!(forwarded(&seen), vec!["text:hello\n"]);
    assert_eq!(r.partial, b"wor");
    let begin = format!("{BEGIN_CONTENT}text/plain\n42\n{END_CONTENT}\n\u{1}END\n");
    r.bytes(b"ld\n");
    r.bytes(begin.as_bytes());
    r.flush();
    assert_eq!(forwarded(&seen), vec!["text:hello\n", "text:world\n"]);
    assert!(r.partial.is_empty());
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([("text/plain".into(), "42".into())]))
    );
}

#[test]
fn a_caught_up_reader_ends_the_run_from_its_state_alone() {
    // What the runner does when the pipe has nothing unread: the report is the same as the
    // sentinel's, and the text goes out first.
    let (mut r, seen, done) = reader("stdout", true);
    let text = format!("note\n{BEGIN_CONTENT}text/plain\n7\n{END_CONTENT}\n");
    r.bytes(text.as_bytes());
    r.end_of_run();
    assert_eq!(forwarded(&seen), vec!["text:note\n"]);
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([("text/plain".into(), "7".into())]))
    );
}

/// All forwarded text, joined.
fn text_of(seen: &Seen) -> String {
    forwarded(seen)
        .iter()
        .map(|f| f.strip_prefix("text:").expect("only text").to_owned())
        .collect()
}

#[test]
fn a_long_line_without_a_newline_is_forwarded_as_it_grows_and_is_not_kept() {
    let (mut r, seen, done) = reader("stdout", true);
    let dots = ".".repeat(3 * LONG_LINE);
    for chunk in dots.as_bytes().chunks(4096) {
        r.bytes(chunk);
    }
    r.flush();
    // Shown before any newline, and the engine holds no more than a long line's worth.
    assert!(
        text_of(&seen).len() >= 2 * LONG_LINE,
        "{}",
        text_of(&seen).len()
    );
    assert!(r.partial.len() <= LONG_LINE + 4096);
    // The sentinel after the text, split across reads, still ends the run; marker text on the
    // same line is text.
    let rest = format!("{PANIC_NOTIFICATION} done\u{1}E");
    r.bytes(rest.as_bytes());
    r.bytes(b"ND\n");
    assert_eq!(text_of(&seen), format!("{dots}{PANIC_NOTIFICATION} done"));
    assert!(!stdout_report(&done).panicked);
    // The next run's lines are read as lines again.
    r.bytes(format!("{PANIC_NOTIFICATION}\n").as_bytes());
    r.end_of_run();
    assert!(stdout_report(&done).panicked);
}

#[test]
fn a_long_line_is_cut_between_characters_and_rich_blocks_are_kept_whole() {
    let (mut r, seen, _done) = reader("stdout", true);
    // Two-byte characters, fed in chunks of an odd size so that a read ends mid-character.
    let accents = "é".repeat(LONG_LINE);
    for chunk in accents.as_bytes().chunks(4095) {
        r.bytes(chunk);
    }
    r.bytes(b"\n");
    r.flush();
    let text = text_of(&seen);
    assert!(!text.contains('\u{FFFD}'));
    assert_eq!(text, format!("{accents}\n"));
    // A long line inside a rich block is the block's content, not text.
    let (mut r, seen, done) = reader("stdout", true);
    let base64 = "A".repeat(3 * LONG_LINE);
    r.bytes(format!("{BEGIN_CONTENT}image/png\n{base64}\n{END_CONTENT}\n").as_bytes());
    r.end_of_run();
    assert!(forwarded(&seen).is_empty());
    assert_eq!(
        stdout_report(&done).value,
        Some(MimeBundle::from([("image/png".into(), base64)]))
    );
}
