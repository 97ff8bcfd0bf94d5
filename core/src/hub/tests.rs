//! The hub's rules, driven by events and read back through its effects.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;

use super::runs::RunOrder;
use super::*;
use crate::link_messages::{RunStatus, StreamOutput};

fn platform() -> Platform {
    Platform {
        arch: "x86_64".into(),
        os: "linux".into(),
        glibc: Some("2.36".into()),
    }
}

fn register_from(hub: &mut Hub, who: &'static str, requested: Option<EngineId>, p: Platform) {
    let request = RegisterRequest {
        requested_id: requested,
        pid: 100,
        hostname: "h".into(),
        version: "0".into(),
        platform: p,
        shares_files: true,
        link_version: LINK_VERSION,
    };
    hub.receive(
        Bytes::from_static(who.as_bytes()),
        FromEngine::Register(request),
        Instant::now(),
    );
}

fn register(hub: &mut Hub, who: &'static str, requested: Option<EngineId>) -> EngineId {
    register_from(hub, who, requested, platform());
    hub.engines()
        .find(|e| e.identity == who.as_bytes() && e.alive())
        .map(|e| e.id)
        .expect("registered")
}

fn order(cell_id: &str, engine: EngineId, incarnation: u64) -> RunOrder<'_> {
    RunOrder {
        cell_id,
        engine,
        incarnation,
        so_path: "/k/cell.so",
        fn_name: "run_cell",
        may_have_value: true,
        shipment: Ok(Shipment::default()),
    }
}

fn run_ends(effects: &[Effect]) -> Vec<(String, bool)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::RunEnded { run_id, end } => {
                Some((run_id.clone(), matches!(end, RunEnd::Died(_))))
            }
            _ => None,
        })
        .collect()
}

fn sends(effects: &[Effect]) -> Vec<(Bytes, ToEngine)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { to, message } => Some((to.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn only_the_newest_finished_results_are_kept() {
    let mut hub = Hub::new(platform());
    let cell = |id: String, done: bool| {
        let mut record = CellRecord::new(id, "1".into(), vec![0], false);
        if done {
            if let Some(engine) = record.engines.get_mut(&0) {
                engine.finish(None);
            }
        }
        record
    };
    hub.add_cell(cell("running".into(), false));
    for n in 0..KEPT_RESULTS + 10 {
        hub.add_cell(cell(format!("c{n}"), true));
    }
    assert_eq!(hub.cells.len(), KEPT_RESULTS);
    assert!(
        hub.cell("running").is_some(),
        "a running cell is never dropped"
    );
    assert!(hub.cell("c0").is_none() && hub.cell("c10").is_none());
    assert!(hub.cell("c11").is_some());
    assert!(hub.cell(&format!("c{}", KEPT_RESULTS + 9)).is_some());
    let forgotten: Vec<String> = hub
        .take_effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Forget { cell_id } => Some(cell_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        forgotten,
        (0..=10).map(|n| format!("c{n}")).collect::<Vec<_>>()
    );
}

#[test]
fn registration_honours_free_requested_ids() {
    let mut hub = Hub::new(platform());
    assert_eq!(register(&mut hub, "a", Some(3)), 3);
    assert_eq!(register(&mut hub, "b", Some(3)), 0);
    assert_eq!(register(&mut hub, "c", None), 1);
    assert_eq!(hub.live_ids(), vec![0, 1, 3]);
    let replies = sends(&hub.take_effects());
    assert_eq!(
        replies[0],
        (
            Bytes::from_static(b"a"),
            ToEngine::Registered(RegisterReply {
                engine_id: Some(3),
                refused: None
            })
        )
    );
    assert_eq!(replies.len(), 3);
}

#[test]
fn an_engine_of_another_link_version_is_refused_with_the_reason() {
    let mut hub = Hub::new(platform());
    let request = RegisterRequest {
        requested_id: None,
        pid: 100,
        hostname: "old".into(),
        version: "0".into(),
        platform: platform(),
        shares_files: true,
        link_version: 0,
    };
    hub.receive(
        Bytes::from_static(b"old"),
        FromEngine::Register(request),
        Instant::now(),
    );
    assert!(hub.live_ids().is_empty());
    match &sends(&hub.take_effects())[..] {
        [(_, ToEngine::Registered(reply))] => {
            let why = reply.refused.as_deref().unwrap_or_default();
            assert!(
                why.starts_with("the engine speaks link version 0, this kernel 2"),
                "{why}"
            );
        }
        other => panic!("expected one refusal, got {other:?}"),
    }
}

#[test]
fn an_engine_for_another_platform_is_refused_with_the_reason() {
    let mut hub = Hub::new(platform());
    let arm = Platform {
        arch: "aarch64".into(),
        ..platform()
    };
    register_from(&mut hub, "arm", None, arm);
    assert!(hub.live_ids().is_empty());
    let refusals = hub.take_refusals();
    assert_eq!(refusals.len(), 1);
    assert!(refusals[0].contains("aarch64-linux"), "{refusals:?}");
    match &sends(&hub.take_effects())[..] {
        [(_, ToEngine::Registered(reply))] => {
            assert_eq!(reply.engine_id, None);
            assert!(reply.refused.as_deref().unwrap_or("").contains("aarch64"));
        }
        other => panic!("expected one refusal, got {other:?}"),
    }
}

#[test]
fn a_dead_engine_fails_its_runs_and_leaves_all() {
    let mut hub = Hub::new(platform());
    let id = register(&mut hub, "a", Some(0));
    hub.add_cell(CellRecord::new("c1".into(), "x".into(), vec![id], false));
    hub.set_variables(id, vec![("x".into(), "i32".into())]);
    let incarnation = hub.engine(id).map(|e| e.incarnation).unwrap_or(0);
    let run_id = hub.start_run(order("c1", id, incarnation), Utc::now());
    hub.take_effects();
    hub.engine_gone(id, None, "killed by signal 9 (SIGKILL)");
    assert_eq!(run_ends(&hub.take_effects()), vec![(run_id, true)]);
    let record = &hub.cell("c1").expect("kept").engines[&id];
    let error = record.error.as_ref().expect("an error");
    assert_eq!(error.ename(), "EngineError");
    assert_eq!(error.evalue, "Engine 0 died while running task 'c1_0'");
    assert!(error.traceback[1].contains("Variables lost: x."));
    assert!(hub.live_ids().is_empty());
}

#[test]
fn a_restarted_engine_never_gets_code_compiled_for_its_predecessor() {
    let mut hub = Hub::new(platform());
    let id = register(&mut hub, "old", Some(0));
    let old = hub.engine(id).map(|e| e.incarnation).unwrap_or(0);
    hub.engine_gone(id, None, "interrupted");
    register(&mut hub, "new", Some(0));
    hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![0], false));
    hub.take_effects();
    let run_id = hub.start_run(order("c", 0, old), Utc::now());
    let effects = hub.take_effects();
    assert_eq!(run_ends(&effects), vec![(run_id, true)]);
    assert!(
        sends(&effects).is_empty(),
        "a run request was sent to the new process"
    );
    let record = &hub.cell("c").expect("kept").engines[&0];
    assert_eq!(
        record.error.as_ref().map(EngineError::ename),
        Some("EngineError")
    );
}

#[test]
fn silent_engines_are_declared_dead_and_depart() {
    let mut hub = Hub::new(platform());
    register(&mut hub, "a", Some(0));
    let later = Instant::now() + HEARTBEAT_TIMEOUT + Duration::from_secs(1);
    hub.set_variables(0, vec![("x".into(), "i32".into())]);
    hub.check_heartbeats(later);
    let departures = hub.take_departures();
    assert_eq!(
        departures,
        vec![Departure {
            id: 0,
            incarnation: 1,
            pid: 100,
            reason: departures[0].reason.clone(),
            on_purpose: false,
            lost: vec!["x".into()],
        }]
    );
    assert!(departures[0].reason.starts_with("no heartbeat for 6."));
    assert!(hub.live_ids().is_empty());
}

#[test]
fn a_heartbeat_is_answered_only_for_a_registered_engine() {
    let mut hub = Hub::new(platform());
    let stranger = Bytes::from_static(b"stranger");
    hub.receive(stranger.clone(), FromEngine::Heartbeat, Instant::now());
    assert!(sends(&hub.take_effects()).is_empty());
    register(&mut hub, "a", None);
    hub.take_effects();
    hub.receive(
        Bytes::from_static(b"a"),
        FromEngine::Heartbeat,
        Instant::now(),
    );
    assert_eq!(
        sends(&hub.take_effects()),
        vec![(
            Bytes::from_static(b"a"),
            ToEngine::Heartbeat {
                period: Duration::from_millis(500)
            }
        )]
    );
}

#[test]
fn pieces_of_a_large_message_keep_an_engine_alive_and_are_answered_once_a_period() {
    let mut hub = Hub::new(platform());
    let a = Bytes::from_static(b"a");
    register(&mut hub, "a", Some(0));
    hub.take_effects();
    let start = Instant::now();
    // Pieces every second for 12 s, with no heartbeat among them (they wait behind the pieces).
    let mut answers = 0;
    for second in 1..=12 {
        let now = start + Duration::from_secs(second);
        hub.receive(a.clone(), FromEngine::Piece, now);
        // Four pieces in the same instant are answered once.
        for _ in 0..3 {
            hub.receive(a.clone(), FromEngine::Piece, now);
        }
        answers += sends(&hub.take_effects()).len();
        hub.check_heartbeats(now);
    }
    assert_eq!(answers, 12);
    assert!(hub.take_departures().is_empty());
    assert_eq!(hub.live_ids(), vec![0]);
    // A stranger's pieces are not answered.
    hub.receive(
        Bytes::from_static(b"x"),
        FromEngine::Piece,
        start + Duration::from_secs(20),
    );
    assert!(sends(&hub.take_effects()).is_empty());
}

#[test]
fn a_large_pool_is_asked_for_slower_heartbeats_and_allowed_longer_silence() {
    let mut hub = Hub::new(platform());
    let names: Vec<&'static str> = (0..300)
        .map(|i| &*Box::leak(format!("engine-{i}").into_boxed_str()))
        .collect();
    for name in &names {
        register(&mut hub, name, None);
    }
    let start = Instant::now();
    hub.check_heartbeats(start);
    hub.take_effects();
    hub.receive(
        Bytes::from_static(names[7].as_bytes()),
        FromEngine::Heartbeat,
        start,
    );
    assert_eq!(
        sends(&hub.take_effects()),
        vec![(
            Bytes::from_static(names[7].as_bytes()),
            ToEngine::Heartbeat {
                period: Duration::from_millis(1200)
            }
        )]
    );
    // Ten periods of 1.2 s: silent for 8 s is still alive, for 13 s is not.
    hub.check_heartbeats(start + Duration::from_secs(8));
    assert!(hub.take_departures().is_empty());
    hub.check_heartbeats(start + Duration::from_secs(13));
    assert_eq!(hub.take_departures().len(), 300);
}

#[test]
fn a_message_from_a_dead_engines_identity_is_not_taken_for_its_successor() {
    let mut hub = Hub::new(platform());
    register(&mut hub, "first", Some(0));
    hub.engine_gone(0, None, "killed");
    register(&mut hub, "second", Some(0));
    hub.take_effects();
    hub.receive(
        Bytes::from_static(b"first"),
        FromEngine::Heartbeat,
        Instant::now(),
    );
    assert!(sends(&hub.take_effects()).is_empty());
    hub.receive(
        Bytes::from_static(b"second"),
        FromEngine::Heartbeat,
        Instant::now(),
    );
    assert_eq!(sends(&hub.take_effects()).len(), 1);
}

#[test]
fn objects_are_read_only_for_a_registered_engine() {
    let mut hub = Hub::new(platform());
    let ask = || {
        FromEngine::ObjectRequest(ObjectRequest {
            sha256: vec!["ab".into()],
        })
    };
    hub.receive(Bytes::from_static(b"x"), ask(), Instant::now());
    assert!(hub.take_effects().is_empty());
    register(&mut hub, "x", None);
    hub.take_effects();
    hub.receive(Bytes::from_static(b"x"), ask(), Instant::now());
    assert!(matches!(
        &hub.take_effects()[..],
        [Effect::SendObjects { sha256, .. }] if sha256 == &["ab".to_string()]
    ));
    // The same object named many times is sent once; the list is cut at the bound.
    let many = |names: Vec<String>| FromEngine::ObjectRequest(ObjectRequest { sha256: names });
    hub.receive(
        Bytes::from_static(b"x"),
        many(vec!["ab".into(); 5000]),
        Instant::now(),
    );
    assert!(matches!(
        &hub.take_effects()[..],
        [Effect::SendObjects { sha256, .. }] if sha256 == &["ab".to_string()]
    ));
    let distinct = (0..5000).map(|i| format!("{i:064x}")).collect();
    hub.receive(Bytes::from_static(b"x"), many(distinct), Instant::now());
    assert!(matches!(
        &hub.take_effects()[..],
        [Effect::SendObjects { sha256, .. }] if sha256.len() == runs::MAX_OBJECTS_ASKED
    ));
}

#[test]
fn a_shipment_that_could_not_be_read_fails_the_run_as_a_load_error() {
    let mut hub = Hub::new(platform());
    let id = register(&mut hub, "a", None);
    hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![id], false));
    hub.take_effects();
    let mut failing = order("c", id, 1);
    failing.shipment = Err("/k/cell.so: permission denied".into());
    let run_id = hub.start_run(failing, Utc::now());
    assert_eq!(run_ends(&hub.take_effects()), vec![(run_id, false)]);
    let error = hub.cell("c").and_then(|c| c.engines[&id].error.clone());
    let error = error.expect("the run failed");
    assert_eq!(error.kind, ErrorKind::Load);
    assert!(
        error.evalue.contains("permission denied"),
        "{}",
        error.evalue
    );
    assert_eq!(
        hub.engine(id).map(|e| e.state.clone()),
        Some(EngineState::Idle)
    );
}

#[test]
fn a_run_reply_fills_the_record() {
    let mut hub = Hub::new(platform());
    let id = register(&mut hub, "a", None);
    hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![id], false));
    let incarnation = hub.engine(id).map(|e| e.incarnation).unwrap_or(0);
    hub.take_effects();
    let run_id = hub.start_run(order("c", id, incarnation), Utc::now());
    assert!(matches!(
        &sends(&hub.take_effects())[..],
        [(_, ToEngine::Run(request, _))] if request.run_id == run_id
    ));
    assert_eq!(
        hub.engine(id).map(|e| e.state.clone()),
        Some(EngineState::Busy)
    );
    let now = Instant::now();
    let a = Bytes::from_static(b"a");
    hub.receive(
        a.clone(),
        FromEngine::Stream(StreamOutput {
            run_id: run_id.clone(),
            name: "stdout".into(),
            text: "hi\n".into(),
        }),
        now,
    );
    hub.receive(
        a,
        FromEngine::RunReply(RunReply {
            run_id: run_id.clone(),
            execution_count: 1,
            status: RunStatus::Ok,
            value: Some([("text/plain".to_string(), "3".to_string())].into()),
            changed_type: vec![],
            started: "2026-01-01T00:00:00Z".into(),
            completed: "2026-01-01T00:00:01Z".into(),
            files: vec![],
        }),
        now,
    );
    let effects = hub.take_effects();
    assert_eq!(run_ends(&effects), vec![(run_id, false)]);
    assert!(matches!(
        &effects[0],
        Effect::Notify { event: CellEvent::Stream { engine, .. }, .. } if *engine == id
    ));
    let record = &hub.cell("c").expect("kept").engines[&id];
    assert_eq!(record.stdout, "hi\n");
    assert_eq!(record.execution_count, Some(1));
    assert_eq!(
        hub.engine(id).map(|e| e.state.clone()),
        Some(EngineState::Idle)
    );
}

#[test]
fn only_a_run_past_its_limit_and_not_yet_interrupted_is_overdue() {
    let mut hub = Hub::new(platform());
    let id = register(&mut hub, "a", None);
    let other = register(&mut hub, "b", None);
    hub.add_cell(CellRecord::new(
        "c".into(),
        "x".into(),
        vec![id, other],
        false,
    ));
    let sent = Utc::now();
    let run_a = hub.start_run(order("c", id, 1), sent);
    let run_b = hub.start_run(order("c", other, 2), sent);
    let limit = chrono::TimeDelta::seconds(2);
    assert!(hub
        .overdue("c", limit, sent + chrono::TimeDelta::seconds(1))
        .is_empty());
    let reply = |run_id: String| RunReply {
        run_id,
        execution_count: 1,
        status: RunStatus::Ok,
        value: None,
        changed_type: vec![],
        started: sent.to_rfc3339(),
        completed: sent.to_rfc3339(),
        files: vec![],
    };
    // b replied and only waits for a: it is not stuck.
    hub.receive(
        Bytes::from_static(b"b"),
        FromEngine::RunReply(reply(run_b)),
        Instant::now(),
    );
    let later = sent + chrono::TimeDelta::seconds(3);
    assert_eq!(hub.overdue("c", limit, later), vec![id]);
    hub.mark_interrupted(id);
    assert!(hub.overdue("c", limit, later).is_empty());
    hub.receive(
        Bytes::from_static(b"a"),
        FromEngine::RunReply(reply(run_a)),
        Instant::now(),
    );
    assert!(hub.overdue("c", limit, later).is_empty());
}
