use super::*;
use crate::px::cell_files::CellFiles;
use rustpx_protocol::RunStatus;
use tokio::sync::mpsc::unbounded_channel;

fn register(hub: &mut Hub, who: &'static str, requested: Option<EngineId>) -> EngineId {
    let message = to_wire(
        "s",
        &RegisterRequest {
            requested_id: requested,
            pid: 100,
            hostname: "h".into(),
            version: "0".into(),
            platform: Platform::current(),
            shares_files: true,
        },
    );
    hub.receive(Bytes::from_static(who.as_bytes()), &message);
    hub.engines()
        .find(|e| e.identity == who.as_bytes() && e.alive())
        .unwrap()
        .id
}

#[test]
fn only_the_newest_finished_results_are_kept() {
    let (tx, _rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    let cell = |id: String, done: bool| {
        let mut record = CellRecord::new(id, "1".into(), vec![0], false);
        if done {
            record.engines.get_mut(&0).unwrap().finish(None);
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
}

#[test]
fn registration_honours_free_requested_ids() {
    let (tx, mut rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    assert_eq!(register(&mut hub, "a", Some(3)), 3);
    assert_eq!(register(&mut hub, "b", Some(3)), 0);
    assert_eq!(register(&mut hub, "c", None), 1);
    assert_eq!(hub.live_ids(), vec![0, 1, 3]);
    let (identity, reply) = rx.try_recv().unwrap();
    assert_eq!(identity, Bytes::from_static(b"a"));
    assert_eq!(reply.msg_type(), "register_reply");
}

#[test]
fn a_dead_engine_fails_its_runs_and_leaves_all() {
    let (tx, _rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    let id = register(&mut hub, "a", Some(0));
    hub.add_cell(CellRecord::new("c1".into(), "x".into(), vec![id], false));
    hub.set_variables(id, vec![("x".into(), "i32".into())]);
    let incarnation = hub.engine(id).unwrap().incarnation;
    let done = hub.start_run(
        "c1",
        id,
        incarnation,
        "/tmp/x.so",
        "f",
        &CellFiles::default(),
    );
    hub.engine_gone(id, None, "killed by signal 9 (SIGKILL)");
    assert!(matches!(done.try_recv(), Ok(RunEnd::Died(_))));
    let record = &hub.cell("c1").unwrap().engines[&id];
    let error = record.error.as_ref().unwrap();
    assert_eq!(error.ename(), "EngineError");
    assert_eq!(error.evalue, "Engine 0 died while running task 'c1_0'");
    assert!(error.traceback[1].contains("Variables lost: x."));
    assert!(hub.live_ids().is_empty());
}

#[test]
fn a_restarted_engine_never_gets_code_compiled_for_its_predecessor() {
    let (tx, mut rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    let id = register(&mut hub, "old", Some(0));
    let old = hub.engine(id).unwrap().incarnation;
    hub.engine_gone(id, None, "interrupted");
    register(&mut hub, "new", Some(0));
    hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![0], false));
    while rx.try_recv().is_ok() {}
    let done = hub.start_run("c", 0, old, "so", "f", &CellFiles::default());
    assert!(matches!(done.try_recv(), Ok(RunEnd::Died(_))));
    assert!(
        rx.try_recv().is_err(),
        "a run request was sent to the new process"
    );
    assert_eq!(
        hub.cell("c").unwrap().engines[&0]
            .error
            .as_ref()
            .unwrap()
            .ename(),
        "EngineError"
    );
}

#[test]
fn silent_engines_are_declared_dead() {
    let (tx, _rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    register(&mut hub, "a", Some(0));
    let later = Instant::now() + HEARTBEAT_TIMEOUT + Duration::from_secs(1);
    assert_eq!(hub.check_heartbeats(later), vec![(0, 100)]);
    assert!(hub.live_ids().is_empty());
}

#[test]
fn a_run_reply_fills_the_record() {
    let (tx, _rx) = unbounded_channel();
    let mut hub = Hub::new(tx);
    let id = register(&mut hub, "a", None);
    hub.add_cell(CellRecord::new("c".into(), "x".into(), vec![id], false));
    let incarnation = hub.engine(id).unwrap().incarnation;
    let done = hub.start_run("c", id, incarnation, "so", "f", &CellFiles::default());
    let run_id = hub.runs.keys().next().unwrap().clone();
    hub.stream(StreamOutput {
        run_id: run_id.clone(),
        name: "stdout".into(),
        text: "hi\n".into(),
    });
    hub.run_reply(RunReply {
        run_id,
        execution_count: 1,
        status: RunStatus::Ok,
        value: Some([("text/plain".to_string(), "3".to_string())].into()),
        changed_type: vec![],
        started: "2026-01-01T00:00:00Z".into(),
        completed: "2026-01-01T00:00:01Z".into(),
        files: vec![],
    });
    assert!(matches!(done.try_recv(), Ok(RunEnd::Finished(_))));
    let record = &hub.cell("c").unwrap().engines[&id];
    assert_eq!(record.stdout, "hi\n");
    assert_eq!(record.execution_count, Some(1));
    assert_eq!(hub.engine(id).unwrap().state, EngineState::Idle);
}
