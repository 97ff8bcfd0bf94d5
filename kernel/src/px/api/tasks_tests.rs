//! The task rules on the scheduler's book alone: retries, dependencies, timeouts, abort.

use std::time::Duration;

use rustpx_client::api_tasks::TaskOptions;

use super::super::book::{test_submission, Book, Submission};
use super::TaskState;

fn submission(function: &str, items: &[u64], engines: &[u32], options: TaskOptions) -> Submission {
    let mut file = Vec::new();
    for item in items {
        let mut encoded = 1u64.to_le_bytes().to_vec();
        encoded.extend_from_slice(&item.to_le_bytes());
        file.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
        file.extend_from_slice(&encoded);
    }
    test_submission(function, "u64", &file, engines, TaskState::new(options))
}

fn take(book: &mut Book, label: &str, engine: u32) -> Option<u64> {
    book.next_chunk(label, engine, "u64", "u64")
        .map(|(index, _, _)| index)
}

#[test]
fn a_failed_task_is_retried_on_another_engine_and_only_the_last_failure_is_kept() {
    let mut book = Book::default();
    let options = TaskOptions {
        retries: 1,
        ..TaskOptions::default()
    };
    let id = book.add(submission("f", &[1], &[0, 1], options)).unwrap();
    let index = take(&mut book, "f", 0).unwrap();
    book.complete(index, 0, vec![(0, "first".into())], vec![], 0.1);
    assert!(!book.submissions[&id].ready(), "a retry is left");
    // Engine 1 may still come (it serves nothing yet, within the grace): engine 0 waits.
    assert_eq!(take(&mut book, "f", 0), None);
    let index = take(&mut book, "f", 1).unwrap();
    book.complete(index, 1, vec![(0, "second".into())], vec![], 0.1);
    let submission = &book.submissions[&id];
    assert!(submission.ready());
    assert_eq!(submission.job.failures.len(), 1);
    assert_eq!(
        (
            submission.job.failures[0].engine,
            submission.job.failures[0].message.as_str()
        ),
        (1, "second")
    );
    let metadata = book.metadata(id).unwrap();
    assert_eq!((metadata[0].2, metadata[0].6), (Some(1), 2));
}

#[test]
fn after_waits_for_its_dependency_and_a_failed_one_makes_it_impossible() {
    let mut book = Book::default();
    let first = book
        .add(submission("f", &[1], &[0], TaskOptions::default()))
        .unwrap();
    let after = TaskOptions {
        after: vec![first],
        ..TaskOptions::default()
    };
    book.check_tasks(&after).unwrap();
    let second = book
        .add(submission("g", &[2], &[0], after.clone()))
        .unwrap();
    assert_eq!(take(&mut book, "g", 0), None, "its dependency is not done");
    let index = take(&mut book, "f", 0).unwrap();
    book.complete(index, 0, vec![], vec![1], 0.1);
    assert!(take(&mut book, "g", 0).is_some(), "resolved once f is done");
    assert!(book.submissions[&second].tasks.resolved);

    let failing = book
        .add(submission("h", &[3], &[0], TaskOptions::default()))
        .unwrap();
    let dependent = book
        .add(submission(
            "k",
            &[4],
            &[0],
            TaskOptions {
                after: vec![failing],
                ..TaskOptions::default()
            },
        ))
        .unwrap();
    let index = take(&mut book, "h", 0).unwrap();
    book.complete(index, 0, vec![(0, "boom".into())], vec![], 0.1);
    book.settle();
    let why = book.submissions[&dependent].failed.clone().unwrap();
    assert!(
        why.starts_with("ImpossibleDependency: `k` (call 4) depends on call 3 (`h`), which failed: [engine 0] item 0: boom"),
        "{why}"
    );
    assert!(book
        .check_tasks(&TaskOptions {
            follow: vec![99],
            ..TaskOptions::default()
        })
        .unwrap_err()
        .contains("call 99 is not kept"));
}

#[test]
fn follow_narrows_the_engines_to_those_that_ran_the_dependency() {
    let mut book = Book::default();
    let first = book
        .add(submission("f", &[1], &[0, 1], TaskOptions::default()))
        .unwrap();
    let index = take(&mut book, "f", 1).unwrap();
    book.complete(index, 1, vec![], vec![1], 0.1);
    let follower = book
        .add(submission(
            "g",
            &[1, 2],
            &[0, 1],
            TaskOptions {
                follow: vec![first],
                ..TaskOptions::default()
            },
        ))
        .unwrap();
    assert_eq!(take(&mut book, "g", 0), None);
    assert!(take(&mut book, "g", 1).is_some());
    assert_eq!(book.submissions[&follower].engines, vec![1]);
}

#[test]
fn a_dependency_not_met_in_time_fails_with_task_timeout() {
    let mut book = Book::default();
    let first = book
        .add(submission("f", &[1], &[0], TaskOptions::default()))
        .unwrap();
    let late = book
        .add(submission(
            "g",
            &[1],
            &[0],
            TaskOptions {
                after: vec![first],
                timeout: Some(Duration::from_millis(20)),
                ..TaskOptions::default()
            },
        ))
        .unwrap();
    book.settle();
    assert!(!book.submissions[&late].ready());
    std::thread::sleep(Duration::from_millis(30));
    book.settle();
    let why = book.submissions[&late].failed.clone().unwrap();
    assert!(
        why.starts_with("TaskTimeout: `g` (call 2) waited 20ms for call(s) [1] to finish"),
        "{why}"
    );
}

#[test]
fn abort_ends_queued_tasks_and_keeps_those_done() {
    let mut book = Book::default();
    let id = book
        .add(submission("f", &[1, 2, 3], &[0], TaskOptions::default()))
        .unwrap();
    let index = take(&mut book, "f", 0).unwrap();
    book.complete(index, 0, vec![], vec![9], 0.1);
    let held = take(&mut book, "f", 0).unwrap();
    book.abort(id).unwrap();
    assert!(!book.submissions[&id].ready(), "one task is still running");
    // Its engine dies: the task it held is aborted too, not run again.
    book.requeue([held]);
    let submission = &book.submissions[&id];
    assert!(submission.ready());
    let items: Vec<u64> = submission.job.failures.iter().map(|f| f.item).collect();
    assert_eq!(items, vec![2, 1]);
    assert!(submission.job.failures[0]
        .message
        .starts_with("TaskAborted:"));
    assert_eq!(submission.job.chunk_result(0), Some(&[9u8][..]));
}

#[test]
fn a_forgotten_dependency_stays_until_its_dependents_are_resolved() {
    let mut book = Book::default();
    let first = book
        .add(submission("f", &[1], &[0], TaskOptions::default()))
        .unwrap();
    let second = book
        .add(submission(
            "g",
            &[1],
            &[0],
            TaskOptions {
                after: vec![first],
                ..TaskOptions::default()
            },
        ))
        .unwrap();
    book.forget(first);
    assert!(book.submissions.contains_key(&first));
    let index = take(&mut book, "f", 0).unwrap();
    book.complete(index, 0, vec![], vec![1], 0.1);
    book.settle();
    assert!(book.submissions[&second].tasks.resolved);
    assert!(!book.submissions.contains_key(&first));
}
